// server.cpp: event loops, acceptors, the per-connection coroutine (read, route, middleware,
// write) and the two streaming endpoints, POST /upload and GET|HEAD /download/:name.
//
// Threading: loop i owns io_context i, its acceptor and every connection it accepted; all of that
// state is touched only from loop i's thread, so nothing on the request path locks. Other threads
// talk to a loop only through net::post (drain, force close).
#include "server.hpp"

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <limits>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <spdlog/spdlog.h>

#include <sluice/clock.hpp>

#include "metrics.hpp"
#include "offloaded.hpp"
#include "redis_mode.hpp"

namespace service {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using clock_type = std::chrono::steady_clock;

constexpr auto tok = net::as_tuple(net::use_awaitable);
// Request header block limit (start line included): larger -> 431.
constexpr std::uint32_t kHeaderLimit = 8 * 1024;
// File I/O chunk: large enough to amortise a syscall, small enough that one pread/write keeps the
// loop responsive (tens of microseconds from the page cache).
constexpr std::size_t kChunk = 64 * 1024;

using parser_type = http::request_parser<http::buffer_body>;

struct loop;

// One connection. Lives in its coroutine's frame; linked into its loop's list so the loop can
// close idle connections at drain and every connection at the deadline.
struct session {
  session(loop& l, app& a, tcp::socket socket);
  ~session();

  net::awaitable<void> run();

  // Reads and answers one request whose first bytes are in buffer_. Returns false when the
  // connection must close afterwards.
  net::awaitable<bool> serve_one(clock_type::time_point start);
  // Reads the rest of the body (up to `limit` bytes) into `out`; answers 413/400 into `res` on
  // failure and returns false.
  net::awaitable<bool> read_body(parser_type& p, std::size_t limit, std::string& out,
                                 response& res);
  // Sends "100 Continue" if the client asked for it.
  net::awaitable<bool> maybe_continue(parser_type& p);
  net::awaitable<bool> upload(parser_type& p, request& req, response& res);
  // Streams a file; returns false if the connection must close. Sets `res` for the log.
  net::awaitable<bool> download(request& req, response& res, bool head_only, std::uint64_t& sent);
  // Serialises the status line and headers of `res` into head_.
  void format_head(const request& req, const response& res, std::uint64_t content_length,
                   bool keep_alive, int version);
  // Writes head_ and `body`; returns false on a write error.
  net::awaitable<bool> write_response(std::string_view body);
  char* chunk();
  // Runs a coroutine handler; an exception becomes a 500.
  net::awaitable<void> run_async(async_handler_fn handler, const request& req, response& res);
  // Runs the after-response middleware: metrics and the access log.
  void finish(const request& req, std::string_view route_label, unsigned status,
              std::uint64_t bytes, clock_type::time_point start);

  // Sets the deadline of the next socket operation; the loop's sweeper closes the socket of a
  // connection past its deadline (one plain store here instead of arming a timer per operation).
  void arm(std::chrono::seconds timeout) { deadline_ = sluice::coarse_clock::now() + timeout; }

  loop& loop_;
  app& app_;
  tcp::socket socket_;
  sluice::coarse_clock::time_point deadline_ = sluice::coarse_clock::time_point::max();
  beast::flat_buffer buffer_;
  std::string peer_;
  std::string head_;
  std::unique_ptr<char[]> chunk_;
  bool idle_ = true;
  session* prev_ = nullptr;
  session* next_ = nullptr;
};

// Connections open in the whole process, against --max-connections. Relaxed: a counter that
// publishes nothing; an admission decision may be off by the few connections in flight.
std::atomic<int> g_connections{0};

struct loop {
  net::io_context ioc{1};
  std::optional<tcp::acceptor> acceptor;
  session* sessions = nullptr;  // intrusive list of this loop's connections
  bool draining = false;
  std::thread thread;

  net::awaitable<void> accept(app& a);
  net::awaitable<void> sweep();
  void drain() {
    draining = true;
    if (acceptor) {
      beast::error_code ec;
      acceptor->close(ec);
    }
    for (session* s = sessions; s != nullptr; s = s->next_) {
      if (s->idle_) {
        beast::error_code ec;
        s->socket_.cancel(ec);
      }
    }
  }
  void close_all() {
    draining = true;
    for (session* s = sessions; s != nullptr; s = s->next_) {
      beast::error_code ec;
      s->socket_.shutdown(tcp::socket::shutdown_both, ec);
      s->socket_.close(ec);
    }
  }
};

session::session(loop& l, app& a, tcp::socket socket)
    : loop_(l), app_(a), socket_(std::move(socket)) {
  beast::error_code ec;
  auto ep = socket_.remote_endpoint(ec);
  if (!ec) {
    auto addr = ep.address();
    if (addr.is_v6() && addr.to_v6().is_v4_mapped()) {
      addr = net::ip::make_address_v4(net::ip::v4_mapped, addr.to_v6());
    }
    peer_ = addr.to_string();
  }
  next_ = loop_.sessions;
  if (next_ != nullptr) next_->prev_ = this;
  loop_.sessions = this;
  app_.metrics->connection_opened();
  g_connections.fetch_add(1, std::memory_order_relaxed);
}

session::~session() {
  app_.metrics->connection_closed();
  g_connections.fetch_sub(1, std::memory_order_relaxed);
  if (prev_ != nullptr) prev_->next_ = next_;
  if (next_ != nullptr) next_->prev_ = prev_;
  if (loop_.sessions == this) loop_.sessions = next_;
}

char* session::chunk() {
  if (!chunk_) chunk_ = std::make_unique<char[]>(kChunk);
  return chunk_.get();
}

// Returns the Date header value, recomputed at most once a second per thread.
std::string_view http_date() {
  thread_local char buf[64];
  thread_local std::time_t last = 0;
  thread_local std::size_t len = 0;
  std::time_t now = std::time(nullptr);
  if (now != last) {
    std::tm tm{};
    gmtime_r(&now, &tm);
    len = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    last = now;
  }
  return {buf, len};
}

bool valid_file_name(std::string_view name) {
  if (name.empty() || name.size() > 255 || name.front() == '.') return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

void session::format_head(const request& req, const response& res, std::uint64_t content_length,
                          bool keep_alive, int version) {
  head_.clear();
  head_ += "HTTP/1.1 ";
  head_ += std::to_string(res.status);
  head_ += ' ';
  auto reason = http::obsolete_reason(http::int_to_status(res.status));
  head_.append(reason.data(), reason.size());
  head_ += "\r\nDate: ";
  head_ += http_date();
  head_ += "\r\nContent-Type: ";
  head_ += res.content_type;
  head_ += "\r\nContent-Length: ";
  head_ += std::to_string(content_length);
  head_ += "\r\nX-Request-Id: ";
  head_ += req.request_id;
  for (const auto& h : res.headers) {
    head_ += "\r\n";
    head_ += h.name;
    head_ += ": ";
    head_ += h.value;
  }
  if (!keep_alive) {
    head_ += "\r\nConnection: close";
  } else if (version == 10) {
    head_ += "\r\nConnection: keep-alive";
  }
  head_ += "\r\n\r\n";
}

net::awaitable<bool> session::write_response(std::string_view body) {
  arm(app_.cfg.io_timeout);
  std::array<net::const_buffer, 2> bufs{net::buffer(head_), net::buffer(body.data(), body.size())};
  auto [ec, n] = co_await net::async_write(socket_, bufs, tok);
  co_return !ec;
}

net::awaitable<bool> session::maybe_continue(parser_type& p) {
  auto expect = p.get()[http::field::expect];
  if (p.get().version() < 11 || !beast::iequals(expect, "100-continue")) co_return true;
  static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
  arm(app_.cfg.io_timeout);
  auto [ec, n] = co_await net::async_write(socket_, net::buffer(cont.data(), cont.size()), tok);
  co_return !ec;
}

net::awaitable<bool> session::read_body(parser_type& p, std::size_t limit, std::string& out,
                                        response& res) {
  if (p.is_done()) co_return true;
  if (auto len = p.content_length(); len && *len > limit) {
    res.error(413, "request body too large");
    co_return false;
  }
  if (!co_await maybe_continue(p)) co_return false;
  while (!p.is_done()) {
    p.get().body().data = chunk();
    p.get().body().size = kChunk;
    arm(app_.cfg.io_timeout);
    auto [ec, n] = co_await http::async_read(socket_, buffer_, p, tok);
    if (ec == http::error::need_buffer) ec = {};
    std::size_t got = kChunk - p.get().body().size;
    if (out.size() + got > limit) {
      res.error(413, "request body too large");
      co_return false;
    }
    out.append(chunk(), got);
    if (ec) {
      res.error(400, "truncated or malformed body");
      co_return false;
    }
  }
  co_return true;
}

// Deletes a temporary upload file unless it was committed under its final name.
struct temp_file {
  std::string path;
  int fd = -1;
  bool committed = false;
  ~temp_file() {
    if (fd >= 0) ::close(fd);
    if (!committed && !path.empty()) ::unlink(path.c_str());
  }
};

net::awaitable<bool> session::upload(parser_type& p, request& req, response& res) {
  const std::uint64_t limit = app_.cfg.max_upload_bytes;
  std::string_view name;
  bool named = req.query_param("name", name);
  if (named && !valid_file_name(name)) {
    res.error(400, "invalid file name");
    co_return !p.is_done() ? false : true;
  }
  if (auto len = p.content_length(); len && *len > limit) {
    res.error(413, "upload larger than --max-upload-mb");
    co_return false;
  }
  temp_file tmp;
  tmp.path = app_.cfg.upload_dir + "/.upload-XXXXXX";
  tmp.fd = ::mkostemp(tmp.path.data(), O_CLOEXEC);
  if (tmp.fd < 0) {
    tmp.path.clear();
    res.error(500, "cannot create upload file");
    co_return p.is_done();
  }
  ::fchmod(tmp.fd, 0644);  // mkostemp creates 0600; uploads are ordinary data files
  if (!co_await maybe_continue(p)) co_return false;
  sha256 digest;
  std::uint64_t total = 0;
  while (!p.is_done()) {
    p.get().body().data = chunk();
    p.get().body().size = kChunk;
    arm(app_.cfg.io_timeout);
    auto [ec, n] = co_await http::async_read(socket_, buffer_, p, tok);
    if (ec == http::error::need_buffer) ec = {};
    std::size_t got = kChunk - p.get().body().size;
    total += got;
    if (total > limit) {
      res.error(413, "upload larger than --max-upload-mb");
      co_return false;
    }
    // The disk write and the hashing run on the file executor: the loop never blocks on I/O.
    if (got > 0 && !co_await write_offloaded(app_, tmp.fd, chunk(), got, digest)) {
      res.error(507, "cannot write upload file");
      co_return false;
    }
    if (ec) {
      res.error(400, "truncated upload body");
      co_return false;
    }
  }
  std::string hex = digest.hex();
  std::string final_name = named ? std::string(name) : hex;
  std::string final_path = app_.cfg.upload_dir + "/" + final_name;
  ::close(tmp.fd);
  tmp.fd = -1;
  if (::rename(tmp.path.c_str(), final_path.c_str()) != 0) {
    res.error(500, "cannot store upload file");
    co_return true;
  }
  tmp.committed = true;
  res.content_type = "application/json";
  res.body = "{\"bytes\":" + std::to_string(total) + ",\"sha256\":\"" + hex + "\",\"name\":\"";
  json_escape(final_name, res.body);
  res.body += "\"}";
  co_return true;
}

// Parses a single "bytes=a-b" range against `size`. Returns 0 for "no Range" (serve all), 1 for
// a satisfiable range in [first, last], -1 for an unsatisfiable or malformed one (416).
int parse_range(std::string_view value, std::uint64_t size, std::uint64_t& first,
                std::uint64_t& last) {
  if (value.empty()) return 0;
  if (value.substr(0, 6) != "bytes=") return 0;  // unknown unit: ignore, as RFC 9110 allows
  std::string_view spec = value.substr(6);
  if (spec.find(',') != std::string_view::npos) return 0;  // multiple ranges: serve it all
  auto dash = spec.find('-');
  if (dash == std::string_view::npos) return -1;
  std::string_view a = spec.substr(0, dash);
  std::string_view b = spec.substr(dash + 1);
  auto num = [](std::string_view s, std::uint64_t& out) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return !s.empty() && ec == std::errc() && end == s.data() + s.size();
  };
  if (a.empty()) {  // suffix: the last N bytes
    std::uint64_t n = 0;
    if (!num(b, n) || n == 0 || size == 0) return -1;
    first = n >= size ? 0 : size - n;
    last = size - 1;
    return 1;
  }
  if (!num(a, first) || first >= size) return -1;
  if (b.empty()) {
    last = size - 1;
  } else if (!num(b, last) || last < first) {
    return -1;
  } else if (last >= size) {
    last = size - 1;
  }
  return 1;
}

net::awaitable<bool> session::download(request& req, response& res, bool head_only,
                                       std::uint64_t& sent) {
  std::string_view name = req.param("name");
  if (!valid_file_name(name)) {
    res.error(400, "invalid file name");
    co_return true;
  }
  std::string path = app_.cfg.data_dir + "/" + std::string(name);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    if (fd >= 0) ::close(fd);
    res.error(404, "file not found");
    co_return true;
  }
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } guard{fd};
  auto size = static_cast<std::uint64_t>(st.st_size);
  std::uint64_t first = 0;
  std::uint64_t last = size == 0 ? 0 : size - 1;
  int range = parse_range(req.range, size, first, last);
  if (range < 0) {
    res.error(416, "range not satisfiable");
    res.set("Content-Range", "bytes */" + std::to_string(size));
    co_return true;
  }
  res.status = range == 1 ? 206 : 200;
  res.content_type = "application/octet-stream";
  res.set("Accept-Ranges", "bytes");
  if (range == 1) {
    res.set("Content-Range", "bytes " + std::to_string(first) + "-" + std::to_string(last) + "/" +
                                 std::to_string(size));
  }
  std::uint64_t length = size == 0 ? 0 : last - first + 1;
  res.streamed = true;
  format_head(req, res, length, req.keep_alive, req.version);
  if (!co_await write_response({})) co_return false;
  if (head_only) co_return true;
  std::uint64_t offset = first;
  std::uint64_t left = length;
  while (left > 0) {
    std::size_t want = left < kChunk ? static_cast<std::size_t>(left) : kChunk;
    // The read runs on the file executor: a cold disk never stalls the loop.
    long n = co_await read_offloaded(app_, fd, chunk(), want, static_cast<off_t>(offset));
    if (n <= 0) co_return false;  // file shrank or I/O error: the response cannot be finished
    arm(app_.cfg.io_timeout);
    auto [ec, w] =
        co_await net::async_write(socket_, net::buffer(chunk(), static_cast<std::size_t>(n)), tok);
    if (ec) co_return false;
    sent += w;
    offset += static_cast<std::uint64_t>(n);
    left -= static_cast<std::uint64_t>(n);
  }
  co_return true;
}

net::awaitable<bool> session::serve_one(clock_type::time_point start) {
  parser_type p;
  p.header_limit(kHeaderLimit);
  p.body_limit(std::numeric_limits<std::uint64_t>::max());  // limits are per route, below
  arm(app_.cfg.header_timeout);
  auto [ec, n] = co_await http::async_read_header(socket_, buffer_, p, tok);

  request req;
  response res;
  std::array<char, 32> id_buf;
  if (ec) {
    if (ec != http::error::header_limit && ec != http::error::bad_target &&
        ec != http::error::bad_method && ec != http::error::bad_version &&
        ec != http::error::bad_field && ec != http::error::bad_value &&
        ec != http::error::bad_line_ending && ec != http::error::bad_content_length &&
        ec != http::error::bad_transfer_encoding && ec != http::error::bad_chunk) {
      co_return false;  // timeout, reset or end of stream: nobody to answer
    }
    req.request_id = pick_request_id({}, id_buf);
    req.client_ip = peer_;
    if (ec == http::error::header_limit) {
      res.error(431, "request header fields too large");
    } else {
      res.error(400, "malformed request");
    }
  }

  const auto& msg = p.get();
  const route* matched = nullptr;
  std::string_view route_label = "unmatched";  // metrics label: static storage
  bool keep_alive = false;
  if (!ec) {
    req.method_text = msg.method_string();
    req.verb = parse_method(req.method_text);
    req.target = msg.target();
    auto q = req.target.find('?');
    req.path = req.target.substr(0, q);
    if (q != std::string_view::npos) req.query = req.target.substr(q + 1);
    req.request_id = pick_request_id(msg["X-Request-Id"], id_buf);
    req.client_ip = app_.proxies.client(peer_, msg["X-Forwarded-For"]);
    req.accept_encoding = msg[http::field::accept_encoding];
    req.content_type = msg[http::field::content_type];
    req.range = msg[http::field::range];
    req.version = static_cast<int>(msg.version());
    keep_alive = p.keep_alive() && !loop_.draining;
    req.keep_alive = keep_alive;

    router::match m = app_.routes.find(req.verb, req.path, req);
    matched = m.found;
    if (matched != nullptr) route_label = matched->pattern;
    // Rate-limit middleware: in-process (a lock-free keyed limiter) or, in Redis mode, the quota
    // shared by every instance (one script round trip, co_awaited on this loop).
    bool limited = false;
    if (matched != nullptr && matched->rate_limited) {
      if (app_.redis && app_.redis->limits_requests()) {
        limited = !co_await app_.redis->admit(req.client_ip, res);
      } else {
        limited = !admit(app_, req.client_ip, res);
      }
    }
    if (matched == nullptr) {
      if (m.path_known) {
        route_label = m.allow_from->pattern;
        res.error(405, "method not allowed");
        res.set("Allow", m.allow_from->allow);
      } else {
        res.error(404, "not found");
      }
    } else if (limited) {
      // 429 filled in by the rate-limit middleware; the body (if any) is left unread.
    } else {
      switch (matched->kind) {
        case route_kind::buffered:
        case route_kind::offloaded:
        case route_kind::async: {
          std::string body;
          if (co_await read_body(p, matched->max_body, body, res)) {
            req.body = body;
            if (matched->kind == route_kind::offloaded) {
              co_await run_offloaded(app_, matched->handler, req, res);
            } else if (matched->kind == route_kind::async) {
              co_await run_async(matched->async_handler, req, res);
            } else {
              try {
                matched->handler(app_, req, res);
              } catch (const std::exception& e) {
                SPDLOG_LOGGER_ERROR(app_.log, "\"msg\":\"handler failed\",\"error\":\"{}\"",
                                    e.what());
                res = response();
                res.error(500, "internal error");
              }
            }
          } else {
            keep_alive = false;
          }
          break;
        }
        case route_kind::upload:
          if (!co_await upload(p, req, res)) keep_alive = false;
          break;
        case route_kind::download: {
          std::uint64_t sent = 0;
          bool ok = co_await download(req, res, req.verb == method::head, sent);
          if (res.streamed) {
            finish(req, matched->pattern, res.status, sent, start);
            co_return ok&& keep_alive;
          }
          if (!ok) keep_alive = false;
          break;
        }
      }
    }
  }
  // A body we did not read is still on the wire: the connection cannot be reused.
  if (!p.is_done() || res.close) keep_alive = false;

  // Compression middleware: text and JSON bodies of 1 KiB or more, when the client accepts gzip.
  if (compressible(res.content_type, res.body.size()) && accepts_gzip(req.accept_encoding)) {
    std::string packed;
    bool ok = res.body.size() >= kOffloadGzipAbove ? co_await gzip_offloaded(app_, res.body, packed)
                                                   : gzip(res.body, packed);
    if (ok) {
      res.body = std::move(packed);
      res.set("Content-Encoding", "gzip");
      res.set("Vary", "Accept-Encoding");
    }
  }

  format_head(req, res, res.body.size(), keep_alive, req.version);
  bool head_only = req.verb == method::head;
  bool wrote = co_await write_response(head_only ? std::string_view() : res.body);
  finish(req, route_label, res.status, head_only ? 0 : res.body.size(), start);
  co_return wrote&& keep_alive;
}

net::awaitable<void> session::run_async(async_handler_fn handler, const request& req,
                                        response& res) {
  try {
    co_await handler(app_, req, res);
  } catch (const std::exception& e) {
    SPDLOG_LOGGER_ERROR(app_.log, "\"msg\":\"handler failed\",\"error\":\"{}\"", e.what());
    res = response();
    res.error(500, "internal error");
  }
}

void session::finish(const request& req, std::string_view route_label, unsigned status,
                     std::uint64_t bytes, clock_type::time_point start) {
  const double seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  app_.metrics->observe(route_label, req.verb, status, seconds);
  log_access(*app_.log, {req.request_id, req.client_ip, req.method_text, req.path, route_label,
                         status, bytes, seconds});
}

net::awaitable<void> session::run() {
  bool first = true;
  for (;;) {
    if (buffer_.size() == 0) {
      idle_ = true;
      if (loop_.draining) break;
      // The first request gets the header timeout from the connection's start; later ones may
      // wait for the idle keep-alive timeout before their first byte.
      arm(first ? app_.cfg.header_timeout : app_.cfg.idle_timeout);
      auto [ec, n] = co_await socket_.async_read_some(buffer_.prepare(4096), tok);
      idle_ = false;
      if (ec) break;
      buffer_.commit(n);
    }
    first = false;
    if (!co_await serve_one(clock_type::now())) break;
  }
  beast::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_send, ec);
  socket_.close(ec);
}

// Closes the sockets of connections past their deadline, four times a second; the session's
// pending operation then fails and the session ends. Runs until the loop drained its last
// connection.
net::awaitable<void> loop::sweep() {
  net::steady_timer timer(ioc);
  while (!(draining && sessions == nullptr)) {
    timer.expires_after(std::chrono::milliseconds(250));
    co_await timer.async_wait(tok);
    const auto now = sluice::coarse_clock::now();
    for (session* s = sessions; s != nullptr; s = s->next_) {
      if (s->deadline_ <= now) {
        beast::error_code ec;
        s->socket_.close(ec);
      }
    }
  }
}

// Answers a connection over --max-connections with 503 and closes it (bounded by a short timer:
// a client that does not read its answer cannot hold the socket).
net::awaitable<void> refuse(app* a, tcp::socket socket) {
  std::array<char, 32> id_buf;
  std::string_view id = pick_request_id({}, id_buf);
  static constexpr std::string_view body = "{\"error\":\"overloaded\"}";
  std::string head =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
      "Retry-After: 1\r\nConnection: close\r\nX-Request-Id: ";
  head.append(id.data(), id.size());
  head += "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  head += body;
  net::steady_timer guard(socket.get_executor(), std::chrono::seconds(1));
  guard.async_wait([&socket](beast::error_code ec) {
    if (!ec) {
      beast::error_code ignored;
      socket.close(ignored);
    }
  });
  co_await net::async_write(socket, net::buffer(head), tok);
  guard.cancel();
  beast::error_code ec;
  socket.shutdown(tcp::socket::shutdown_send, ec);
  a->metrics->observe("overload", method::other, 503, 0.0);
}

// Owns one connection for its lifetime (parameters live in the coroutine frame).
net::awaitable<void> run_session(loop* l, app* a, tcp::socket socket) {
  session conn(*l, *a, std::move(socket));
  co_await conn.run();
}

net::awaitable<void> loop::accept(app& a) {
  for (;;) {
    auto [ec, socket] = co_await acceptor->async_accept(tok);
    if (ec == net::error::operation_aborted || !acceptor->is_open()) co_return;
    if (ec) {
      // Out of descriptors or a transient error: back off briefly instead of spinning.
      SPDLOG_LOGGER_WARN(a.log, "\"msg\":\"accept failed\",\"error\":\"{}\"", ec.message());
      net::steady_timer t(ioc, std::chrono::milliseconds(50));
      co_await t.async_wait(tok);
      continue;
    }
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    if (a.cfg.max_connections > 0 &&
        g_connections.load(std::memory_order_relaxed) >= a.cfg.max_connections) {
      // Overload: answer 503 + Retry-After at once rather than queue without bound.
      net::co_spawn(ioc, refuse(&a, std::move(socket)), net::detached);
      continue;
    }
    net::co_spawn(ioc, run_session(this, &a, std::move(socket)), net::detached);
  }
}

}  // namespace

struct server::impl {
  app& a;
  std::vector<std::unique_ptr<loop>> loops;
  std::uint16_t port = 0;
  std::atomic<int> running{0};

  explicit impl(app& ap) : a(ap) {}
};

server::server(app& a) : impl_(std::make_unique<impl>(a)) {
  for (int i = 0; i < a.cfg.threads; ++i) impl_->loops.push_back(std::make_unique<loop>());
}

server::~server() = default;

absl::Status server::listen() {
  beast::error_code ec;
  auto address = net::ip::make_address(impl_->a.cfg.listen_host, ec);
  if (ec) {
    // A host name: resolve it once, synchronously, before any loop runs.
    tcp::resolver resolver(impl_->loops.front()->ioc);
    auto results = resolver.resolve(impl_->a.cfg.listen_host, "", ec);
    if (ec || results.empty()) {
      return absl::UnavailableError("cannot resolve --listen host " + impl_->a.cfg.listen_host);
    }
    address = results.begin()->endpoint().address();
  }
  std::uint16_t port = impl_->a.cfg.listen_port;
  for (auto& l : impl_->loops) {
    tcp::endpoint ep(address, port);
    tcp::acceptor acc(l->ioc);
    using reuse_port = net::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;
    acc.open(ep.protocol(), ec);
    if (!ec) acc.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acc.set_option(reuse_port(true), ec);
    if (!ec) acc.bind(ep, ec);
    if (!ec) acc.listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
      return absl::UnavailableError("cannot listen on " + impl_->a.cfg.listen_host + ":" +
                                    std::to_string(port) + ": " + ec.message());
    }
    // Port 0: the first acceptor picked a free port; the others join it.
    port = acc.local_endpoint().port();
    l->acceptor.emplace(std::move(acc));
  }
  impl_->port = port;
  return absl::OkStatus();
}

std::uint16_t server::port() const { return impl_->port; }

void server::start() {
  impl_->running.store(static_cast<int>(impl_->loops.size()), std::memory_order_relaxed);
  for (auto& l : impl_->loops) {
    loop* lp = l.get();
    net::co_spawn(lp->ioc, lp->accept(impl_->a), net::detached);
    net::co_spawn(lp->ioc, lp->sweep(), net::detached);
    lp->thread = std::thread([this, lp] {
      lp->ioc.run();
      // Release: the loop's last writes happen-before stopped() observing zero.
      impl_->running.fetch_sub(1, std::memory_order_release);
    });
  }
}

void server::begin_drain() {
  for (auto& l : impl_->loops) {
    loop* lp = l.get();
    net::post(lp->ioc, [lp] { lp->drain(); });
  }
}

void server::force_close() {
  for (auto& l : impl_->loops) {
    loop* lp = l.get();
    net::post(lp->ioc, [lp] { lp->close_all(); });
  }
}

bool server::stopped() const { return impl_->running.load(std::memory_order_acquire) == 0; }

void server::join() {
  for (auto& l : impl_->loops) {
    if (l->thread.joinable()) l->thread.join();
  }
}

}  // namespace service
