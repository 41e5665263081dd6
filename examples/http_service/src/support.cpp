// support.cpp: the router and the middleware pieces that need no Beast: request ids, gzip (zlib),
// SHA-256 (OpenSSL libcrypto), trusted-proxy client addresses and the JSON access log (spdlog).
#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include <arpa/inet.h>
#include <zlib.h>

#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include "metrics.hpp"
#include "primitives.hpp"
#include "redis_mode.hpp"
#include "service.hpp"
#include "user_store.hpp"

namespace service {

app::app() = default;
app::~app() = default;

method parse_method(std::string_view token) {
  if (token == "GET") return method::get;
  if (token == "POST") return method::post;
  if (token == "HEAD") return method::head;
  if (token == "PUT") return method::put;
  if (token == "DELETE") return method::del;
  return method::other;
}

bool request::query_param(std::string_view name, std::string_view& value) const {
  std::string_view rest = query;
  while (!rest.empty()) {
    auto amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    auto eq = pair.find('=');
    std::string_view key = pair.substr(0, eq);
    if (key == name) {
      value = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
      return true;
    }
  }
  return false;
}

void response::error(unsigned code, std::string_view message) {
  status = code;
  content_type = "application/json";
  body.assign("{\"error\":\"");
  json_escape(message, body);
  body.append("\"}");
}

// ---- router ---------------------------------------------------------------------------------------

namespace {

// Returns true if `path` matches `pattern`, binding `:name` segments into `req`.
bool match_pattern(std::string_view pattern, std::string_view path, request& req) {
  if (path.empty() || path.front() != '/') return false;
  std::string_view p = pattern.substr(1);
  std::string_view s = path.substr(1);
  std::size_t bound = 0;
  for (;;) {
    auto p_slash = p.find('/');
    auto s_slash = s.find('/');
    std::string_view ps = p.substr(0, p_slash);
    std::string_view ss = s.substr(0, s_slash);
    if (!ps.empty() && ps.front() == ':') {
      if (ss.empty() || bound == req.params.size()) return false;
      req.params[bound++] = {ps.substr(1), ss};
    } else if (ps != ss) {
      return false;
    }
    if (p_slash == std::string_view::npos || s_slash == std::string_view::npos) {
      if (p_slash != s_slash) return false;
      req.param_count = bound;
      return true;
    }
    p = p.substr(p_slash + 1);
    s = s.substr(s_slash + 1);
  }
}

}  // namespace

void router::add(std::string_view pattern, std::uint8_t methods, route_kind kind,
                 handler_fn handler, std::size_t max_body, bool rate_limited) {
  route r;
  r.pattern = pattern;
  r.methods = methods;
  r.kind = kind;
  r.handler = handler;
  r.max_body = max_body;
  r.rate_limited = rate_limited;
  routes_.push_back(std::move(r));
  // Rebuild the Allow header of every route sharing this pattern.
  std::uint8_t all = 0;
  for (const auto& x : routes_) {
    if (x.pattern == pattern) all = static_cast<std::uint8_t>(all | x.methods);
  }
  std::string allow;
  static constexpr std::pair<method, std::string_view> names[] = {{method::get, "GET"},
                                                                  {method::head, "HEAD"},
                                                                  {method::post, "POST"},
                                                                  {method::put, "PUT"},
                                                                  {method::del, "DELETE"}};
  for (auto [m, name] : names) {
    if (all & static_cast<std::uint8_t>(m)) {
      if (!allow.empty()) allow += ", ";
      allow += name;
    }
  }
  for (auto& x : routes_) {
    if (x.pattern == pattern) x.allow = allow;
  }
}

void router::add(std::string_view pattern, std::uint8_t methods, async_handler_fn handler,
                 std::size_t max_body, bool rate_limited) {
  add(pattern, methods, route_kind::async, nullptr, max_body, rate_limited);
  routes_.back().async_handler = handler;
}

router::match router::find(method verb, std::string_view path, request& req) const {
  match m;
  for (const auto& r : routes_) {
    request probe;
    if (!match_pattern(r.pattern, path, probe)) continue;
    if (r.methods & static_cast<std::uint8_t>(verb)) {
      req.params = probe.params;
      req.param_count = probe.param_count;
      m.found = &r;
      return m;
    }
    m.path_known = true;
    m.allow_from = &r;
  }
  return m;
}

// ---- request ids ----------------------------------------------------------------------------------

namespace {

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::uint64_t& rng_state() {
  thread_local std::uint64_t state = [] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd() ^
           static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
           std::hash<std::thread::id>()(std::this_thread::get_id());
  }();
  return state;
}

bool sane_id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '+' || c == '=' || c == '/' || c == '-';
}

}  // namespace

std::string_view pick_request_id(std::string_view client, std::array<char, 32>& buf) {
  if (!client.empty() && client.size() <= 128) {
    bool sane = true;
    for (char c : client) sane = sane && sane_id_char(c);
    if (sane) return client;
  }
  static constexpr char hex[] = "0123456789abcdef";
  auto& state = rng_state();
  for (int half = 0; half < 2; ++half) {
    std::uint64_t v = splitmix64(state);
    for (int i = 0; i < 16; ++i)
      buf[static_cast<std::size_t>(half * 16 + i)] = hex[(v >> (i * 4)) & 15];
  }
  return {buf.data(), buf.size()};
}

// ---- gzip -----------------------------------------------------------------------------------------

bool accepts_gzip(std::string_view accept_encoding) {
  std::string_view rest = accept_encoding;
  while (!rest.empty()) {
    auto comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    auto semi = item.find(';');
    std::string_view coding = item.substr(0, semi);
    while (!coding.empty() && coding.front() == ' ') coding.remove_prefix(1);
    while (!coding.empty() && coding.back() == ' ') coding.remove_suffix(1);
    if (coding != "gzip" && coding != "*" && coding != "x-gzip") continue;
    if (semi == std::string_view::npos) return true;
    std::string_view params = item.substr(semi + 1);
    auto q = params.find("q=");
    if (q == std::string_view::npos) return true;
    std::string_view qv = params.substr(q + 2);
    // q=0, q=0.0, q=0.00, q=0.000 mean "not acceptable".
    bool zero = !qv.empty() && qv.front() == '0';
    for (std::size_t i = 1; zero && i < qv.size() && qv[i] != ' ' && qv[i] != ';'; ++i) {
      zero = qv[i] == '.' || qv[i] == '0';
    }
    return !zero;
  }
  return false;
}

bool compressible(std::string_view content_type, std::size_t size) {
  if (size < 1024) return false;
  return content_type.substr(0, 5) == "text/" || content_type.substr(0, 16) == "application/json";
}

bool gzip(std::string_view in, std::string& out) {
  // One deflate state per thread, reset between bodies: deflateInit2 allocates ~256 KiB.
  struct deflater {
    z_stream zs{};
    bool ok = false;
    deflater() {
      ok = deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) ==
           Z_OK;
    }
    ~deflater() {
      if (ok) deflateEnd(&zs);
    }
  };
  thread_local deflater d;
  if (!d.ok || deflateReset(&d.zs) != Z_OK) return false;
  out.resize(deflateBound(&d.zs, static_cast<uLong>(in.size())));
  d.zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  d.zs.avail_in = static_cast<uInt>(in.size());
  d.zs.next_out = reinterpret_cast<Bytef*>(out.data());
  d.zs.avail_out = static_cast<uInt>(out.size());
  if (deflate(&d.zs, Z_FINISH) != Z_STREAM_END) return false;
  out.resize(d.zs.total_out);
  return true;
}

// ---- sha256 ---------------------------------------------------------------------------------------

sha256::sha256() : ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr);
}

sha256::~sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void sha256::update(const void* data, std::size_t size) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size);
}

std::string sha256::hex() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), digest, &len);
  static constexpr char hexd[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(hexd[digest[i] >> 4]);
    out.push_back(hexd[digest[i] & 15]);
  }
  return out;
}

// ---- trusted proxies ------------------------------------------------------------------------------

namespace {

// Parses an IPv4 or IPv6 address into 16 bytes (IPv4 in the first 4). Returns false if malformed.
bool parse_address(std::string_view text, std::array<unsigned char, 16>& bytes, bool& v6) {
  char buf[64];
  if (text.empty() || text.size() >= sizeof buf) return false;
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  bytes.fill(0);
  if (inet_pton(AF_INET, buf, bytes.data()) == 1) {
    v6 = false;
    return true;
  }
  if (inet_pton(AF_INET6, buf, bytes.data()) == 1) {
    v6 = true;
    // An IPv4-mapped address (::ffff:a.b.c.d) is treated as the IPv4 address.
    static constexpr unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(bytes.data(), mapped, 12) == 0) {
      std::memmove(bytes.data(), bytes.data() + 12, 4);
      std::memset(bytes.data() + 4, 0, 12);
      v6 = false;
    }
    return true;
  }
  return false;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

bool proxy_list::parse(const std::vector<std::string>& cidrs, std::string& error) {
  nets_.clear();
  for (const auto& cidr : cidrs) {
    std::string_view s = cidr;
    auto slash = s.find('/');
    net n;
    if (!parse_address(s.substr(0, slash), n.bytes, n.v6)) {
      error = "bad --trusted-proxy \"" + cidr + "\": not an IP address or CIDR";
      return false;
    }
    int max = n.v6 ? 128 : 32;
    n.prefix = max;
    if (slash != std::string_view::npos) {
      std::string_view bits = s.substr(slash + 1);
      int v = 0;
      bool ok = !bits.empty() && bits.size() <= 3;
      for (char c : bits) {
        ok = ok && c >= '0' && c <= '9';
        v = v * 10 + (c - '0');
      }
      if (!ok || v > max) {
        error =
            "bad --trusted-proxy \"" + cidr + "\": prefix length must be 0.." + std::to_string(max);
        return false;
      }
      n.prefix = v;
    }
    nets_.push_back(n);
  }
  return true;
}

bool proxy_list::trusted(std::string_view address) const {
  std::array<unsigned char, 16> bytes;
  bool v6 = false;
  if (!parse_address(address, bytes, v6)) return false;
  for (const auto& n : nets_) {
    if (n.v6 != v6) continue;
    int full = n.prefix / 8;
    int rest = n.prefix % 8;
    if (std::memcmp(bytes.data(), n.bytes.data(), static_cast<std::size_t>(full)) != 0) continue;
    if (rest != 0) {
      auto mask = static_cast<unsigned char>(0xff << (8 - rest));
      if ((bytes[static_cast<std::size_t>(full)] & mask) !=
          (n.bytes[static_cast<std::size_t>(full)] & mask)) {
        continue;
      }
    }
    return true;
  }
  return false;
}

std::string_view proxy_list::client(std::string_view peer, std::string_view forwarded_for) const {
  if (nets_.empty() || forwarded_for.empty() || !trusted(peer)) return peer;
  // Walk X-Forwarded-For from the right: each hop appended the address it saw. The first
  // address (from the right) that is not one of our proxies is the client.
  std::string_view rest = forwarded_for;
  while (!rest.empty()) {
    auto comma = rest.rfind(',');
    std::string_view hop = trim(comma == std::string_view::npos ? rest : rest.substr(comma + 1));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(0, comma);
    std::array<unsigned char, 16> bytes;
    bool v6 = false;
    if (!parse_address(hop, bytes, v6)) return peer;  // garbage: believe only the socket
    if (!trusted(hop) || rest.empty()) return hop;
  }
  return peer;
}

// ---- access log -----------------------------------------------------------------------------------

void json_escape(std::string_view s, std::string& out) {
  static constexpr char hex[] = "0123456789abcdef";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          // Non-ASCII bytes are escaped too: a path is not necessarily valid UTF-8.
          out += "\\u00";
          out.push_back(hex[c >> 4]);
          out.push_back(hex[c & 15]);
        } else {
          out.push_back(ch);
        }
    }
  }
}

void log_access(spdlog::logger& log, const access_entry& e) {
  if (!log.should_log(spdlog::level::info)) return;
  thread_local std::string line;
  line.clear();
  line += "\"msg\":\"access\",\"request_id\":\"";
  json_escape(e.request_id, line);
  line += "\",\"client_ip\":\"";
  json_escape(e.client_ip, line);
  line += "\",\"method\":\"";
  json_escape(e.method, line);
  line += "\",\"path\":\"";
  json_escape(e.path, line);
  line += "\",\"route\":\"";
  json_escape(e.route, line);
  line += "\",\"status\":";
  line += std::to_string(e.status);
  line += ",\"bytes\":";
  line += std::to_string(e.bytes);
  char dur[32];
  int n = std::snprintf(dur, sizeof dur, ",\"duration_ms\":%.3f", e.duration_seconds * 1e3);
  line.append(dur, static_cast<std::size_t>(n));
  log.log(spdlog::level::info, spdlog::string_view_t(line.data(), line.size()));
}

}  // namespace service
