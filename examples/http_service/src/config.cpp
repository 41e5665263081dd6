// config.cpp: the command-line flags (Abseil flags), their SLUICE_<NAME> environment twins, and
// the checks that turn a bad value into exit status 2 with one clear line.
#include "config.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <thread>

#include <absl/flags/commandlineflag.h>
#include <absl/flags/flag.h>
#include <absl/flags/reflection.h>
#include <absl/strings/numbers.h>
#include <absl/strings/str_split.h>

#include <sluice/redis/url.hpp>

ABSL_FLAG(std::string, listen, "127.0.0.1:8080",
          "HOST:PORT to serve on ([v6addr]:PORT for IPv6; port 0 picks a free port, see "
          "--port-file)");
ABSL_FLAG(int32_t, threads, 0, "event-loop threads, each with its own acceptor (0: one per core)");
ABSL_FLAG(int32_t, max_connections, 10000,
          "client connections one process holds open at most; more are answered 503 with "
          "Retry-After (overload shedding) and closed");
ABSL_FLAG(int32_t, processes, 1,
          "supervisor mode when > 1: N worker processes share the port, a crashed worker is "
          "restarted with backoff, SIGHUP restarts them one by one");
ABSL_FLAG(int64_t, max_rss_mb, 0,
          "supervisor mode: a worker whose resident memory exceeds this is replaced (0: no limit)");
ABSL_FLAG(std::string, data_dir, "data", "directory /download/:name serves files from");
ABSL_FLAG(std::string, upload_dir, "",
          "directory POST /upload writes to (empty: <data-dir>/uploads)");
ABSL_FLAG(int64_t, max_upload_mb, 100, "largest accepted upload in MiB; larger ones get 413");
ABSL_FLAG(std::vector<std::string>, trusted_proxy, {},
          "CIDR of a reverse proxy whose X-Forwarded-For is believed (repeatable)");
ABSL_FLAG(int64_t, rate_limit, 1000,
          "requests per second each client may make (sustained); 0 turns rate limiting off");
ABSL_FLAG(int64_t, rate_burst, 2000, "requests a client may make at once from an idle start");
ABSL_FLAG(int32_t, offload_threads, 0,
          "worker threads for CPU-heavy work (/compute, large gzip) (0: one per core)");
ABSL_FLAG(int32_t, offload_queue, 1024,
          "most CPU tasks waiting for a worker; beyond it /compute answers 503 + Retry-After");
ABSL_FLAG(int64_t, cache_ttl_ms, 60000,
          "time to live of cached users and /api/data pages (milliseconds)");
ABSL_FLAG(int64_t, stale_ms, 600000,
          "how long an expired user stays available as a STALE fallback while the store is down");
ABSL_FLAG(int64_t, breaker_open_ms, 5000,
          "how long the user store's circuit breaker stays open before probing (milliseconds)");
ABSL_FLAG(std::string, log, "-", "log file (rotated by size), or - for standard output");
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error or off");
ABSL_FLAG(int64_t, log_max_mb, 100, "size in MiB at which the log file is rotated");
ABSL_FLAG(int32_t, log_files, 5, "rotated log files kept besides the current one");
ABSL_FLAG(int32_t, seed_users, 1000,
          "users 1..N in the store (with --redis: created in Redis where missing, at start-up and "
          "after Redis restarted empty)");
ABSL_FLAG(int32_t, drain_seconds, 10,
          "on SIGTERM/SIGINT, how long in-flight requests may take before connections are closed");
ABSL_FLAG(int32_t, header_timeout_seconds, 10,
          "a client that has not sent its whole request header in this time is dropped");
ABSL_FLAG(int32_t, idle_timeout_seconds, 75,
          "idle keep-alive connections are closed after this (longer than nginx's 60 s)");
ABSL_FLAG(int32_t, io_timeout_seconds, 60,
          "a body read or response write that makes no progress for this long is dropped");
ABSL_FLAG(std::string, port_file, "",
          "once listening, write the bound port to this file (for scripts using port 0)");
ABSL_FLAG(std::string, redis, "",
          "redis://[[user]:password@]host[:port][/db]: keep users, /api/data pages and the rate "
          "limits in this Redis, shared by every instance using it (empty: the embedded "
          "in-process store)");
ABSL_FLAG(int64_t, redis_timeout_ms, 250,
          "deadline of each Redis command; a slower answer counts as a store failure");
ABSL_FLAG(std::string, store_fault_file, "",
          "test switch: while this file exists, every read of the embedded store fails");

namespace service {
namespace {

constexpr std::string_view kUsage =
    "sluice-service: the sluice example HTTP service (Boost.Beast + sluice primitives).\n"
    "\n"
    "Usage: sluice-service [--flag=value | --flag value]...\n"
    "Every flag can also be set with the environment variable SLUICE_<NAME> (e.g. "
    "SLUICE_THREADS=4,\n"
    "SLUICE_LISTEN=0.0.0.0:8080); the command line wins. A bad flag or value exits with status 2.\n"
    "\n"
    "Flags:\n";

[[noreturn]] void fail(const std::string& line) {
  std::fprintf(stderr, "sluice-service: %s\n", line.c_str());
  std::exit(2);
}

// Returns true for the flags this file defines (not Abseil's own --flagfile, --fromenv, ...).
bool is_ours(const absl::CommandLineFlag& flag) {
  return flag.Filename().find("config.cpp") != std::string::npos;
}

std::string env_name(absl::string_view flag) {
  std::string name = "SLUICE_";
  for (char c : flag)
    name.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  return name;
}

[[noreturn]] void print_help() {
  std::string out(kUsage);
  std::vector<absl::CommandLineFlag*> flags;
  for (auto& [name, flag] : absl::GetAllFlags()) {
    if (is_ours(*flag)) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(), [](auto* a, auto* b) { return a->Name() < b->Name(); });
  for (auto* flag : flags) {
    std::string name(flag->Name());
    std::replace(name.begin(), name.end(), '_', '-');
    // The Redis URL's variable is the contract's SLUICE_REDIS_URL (SLUICE_REDIS works too).
    const std::string env = flag->Name() == "redis" ? "SLUICE_REDIS_URL" : env_name(flag->Name());
    out += "  --" + name + "  " + flag->Help() + "\n      default: \"" + flag->DefaultValue() +
           "\"  env: " + env + "\n";
  }
  out += "  --help  print this and exit\n";
  std::fputs(out.c_str(), stdout);
  std::exit(0);
}

// Sets `flag` from `value`, or exits 2 naming where the value came from.
void set_flag(absl::CommandLineFlag& flag, std::string_view value, const std::string& origin) {
  std::string error;
  if (!flag.ParseFrom(absl::string_view(value.data(), value.size()), &error)) {
    fail("bad value \"" + std::string(value) + "\" for " + origin + ": " + error);
  }
}

absl::CommandLineFlag* find_ours(std::string_view dashed) {
  std::string name(dashed);
  std::replace(name.begin(), name.end(), '-', '_');
  absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  return flag != nullptr && is_ours(*flag) ? flag : nullptr;
}

void parse_argv(int argc, char** argv, std::vector<std::string>& proxies) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h" || arg == "--helpfull") print_help();
    if (arg.size() < 3 || arg.substr(0, 2) != "--") {
      fail("unexpected argument \"" + std::string(arg) + "\" (see --help)");
    }
    std::string_view body = arg.substr(2);
    std::string_view name = body;
    std::string_view value;
    bool has_value = false;
    if (auto eq = body.find('='); eq != std::string_view::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    absl::CommandLineFlag* flag = find_ours(name);
    if (flag == nullptr) fail("unknown flag --" + std::string(name) + " (see --help)");
    if (!has_value) {
      if (i + 1 >= argc) fail("flag --" + std::string(name) + " needs a value");
      value = argv[++i];
    }
    if (flag->Name() == "trusted_proxy") {
      // Repeatable: each occurrence adds to the list (Abseil's vector flag would replace it).
      for (auto part : absl::StrSplit(absl::string_view(value.data(), value.size()), ',')) {
        if (!part.empty()) proxies.emplace_back(part);
      }
      continue;
    }
    set_flag(*flag, value, "--" + std::string(name));
  }
}

void apply_env() {
  // The contract's name for the Redis URL; SLUICE_REDIS (the generic twin) also works and wins.
  if (const char* url = std::getenv("SLUICE_REDIS_URL"); url != nullptr) {
    if (absl::CommandLineFlag* flag = find_ours("redis")) set_flag(*flag, url, "SLUICE_REDIS_URL");
  }
  for (auto& [name, flag] : absl::GetAllFlags()) {
    if (!is_ours(*flag)) continue;
    std::string var = env_name(flag->Name());
    if (const char* value = std::getenv(var.c_str()); value != nullptr) {
      set_flag(*flag, value, var);
    }
  }
}

template <class T>
T in_range(const absl::Flag<T>& flag, std::string_view name, T lo, T hi) {
  T v = absl::GetFlag(flag);
  if (v < lo || v > hi) {
    fail("--" + std::string(name) + " must be between " + std::to_string(lo) + " and " +
         std::to_string(hi) + " (got " + std::to_string(v) + ")");
  }
  return v;
}

void parse_listen(const std::string& listen, config& c) {
  std::string_view s = listen;
  std::string_view host;
  std::string_view port;
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      fail("--listen must be HOST:PORT or [V6ADDR]:PORT (got \"" + listen + "\")");
    }
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string_view::npos) {
      fail("--listen must be HOST:PORT (got \"" + listen + "\")");
    }
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  std::uint32_t p = 0;
  if (host.empty() || !absl::SimpleAtoi(absl::string_view(port.data(), port.size()), &p) ||
      p > 65535) {
    fail("--listen must be HOST:PORT with a port in [0, 65535] (got \"" + listen + "\")");
  }
  c.listen_host = std::string(host);
  c.listen_port = static_cast<std::uint16_t>(p);
}

}  // namespace

config load_config(int argc, char** argv) {
  std::vector<std::string> proxies;
  apply_env();
  parse_argv(argc, argv, proxies);

  config c;
  parse_listen(absl::GetFlag(FLAGS_listen), c);
  int threads = in_range(FLAGS_threads, "threads", 0, 256);
  if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  c.threads = threads;
  c.processes = in_range(FLAGS_processes, "processes", 1, 64);
  c.max_connections = in_range(FLAGS_max_connections, "max-connections", 1, 10'000'000);
  c.max_rss_bytes = static_cast<std::uint64_t>(
                        in_range(FLAGS_max_rss_mb, "max-rss-mb", int64_t{0}, int64_t{1} << 20))
                    << 20;
  c.data_dir = absl::GetFlag(FLAGS_data_dir);
  if (c.data_dir.empty()) fail("--data-dir must not be empty");
  c.upload_dir = absl::GetFlag(FLAGS_upload_dir);
  if (c.upload_dir.empty()) c.upload_dir = c.data_dir + "/uploads";
  c.max_upload_bytes = static_cast<std::uint64_t>(in_range(FLAGS_max_upload_mb, "max-upload-mb",
                                                           int64_t{0}, int64_t{1} << 20))
                       << 20;
  if (proxies.empty()) proxies = absl::GetFlag(FLAGS_trusted_proxy);
  c.trusted_proxies = std::move(proxies);
  c.log_path = absl::GetFlag(FLAGS_log);
  if (c.log_path.empty()) fail("--log must be a file name or -");
  c.log_level = absl::GetFlag(FLAGS_log_level);
  static constexpr std::string_view levels[] = {"trace", "debug", "info", "warn", "error", "off"};
  if (std::find(std::begin(levels), std::end(levels), c.log_level) == std::end(levels)) {
    fail("--log-level must be one of trace, debug, info, warn, error, off (got \"" + c.log_level +
         "\")");
  }
  c.log_max_bytes = static_cast<std::uint64_t>(
                        in_range(FLAGS_log_max_mb, "log-max-mb", int64_t{1}, int64_t{1} << 20))
                    << 20;
  c.log_files = in_range(FLAGS_log_files, "log-files", 0, 1000);
  c.seed_users = in_range(FLAGS_seed_users, "seed-users", 0, 10'000'000);
  c.drain = std::chrono::seconds(in_range(FLAGS_drain_seconds, "drain-seconds", 0, 3600));
  c.header_timeout = std::chrono::seconds(
      in_range(FLAGS_header_timeout_seconds, "header-timeout-seconds", 1, 3600));
  c.idle_timeout =
      std::chrono::seconds(in_range(FLAGS_idle_timeout_seconds, "idle-timeout-seconds", 1, 86400));
  c.io_timeout =
      std::chrono::seconds(in_range(FLAGS_io_timeout_seconds, "io-timeout-seconds", 1, 3600));
  c.rate_limit = static_cast<std::uint64_t>(
      in_range(FLAGS_rate_limit, "rate-limit", int64_t{0}, int64_t{1'000'000'000}));
  c.rate_burst = static_cast<std::uint64_t>(
      in_range(FLAGS_rate_burst, "rate-burst", int64_t{1}, int64_t{1'000'000'000}));
  int offload_threads = in_range(FLAGS_offload_threads, "offload-threads", 0, 256);
  if (offload_threads == 0) {
    offload_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  c.offload_threads = offload_threads;
  c.offload_queue = in_range(FLAGS_offload_queue, "offload-queue", 1, 1'000'000);
  c.cache_ttl = std::chrono::milliseconds(
      in_range(FLAGS_cache_ttl_ms, "cache-ttl-ms", int64_t{1}, int64_t{86'400'000}));
  c.stale_for = std::chrono::milliseconds(
      in_range(FLAGS_stale_ms, "stale-ms", int64_t{0}, int64_t{86'400'000}));
  c.breaker_open = std::chrono::milliseconds(
      in_range(FLAGS_breaker_open_ms, "breaker-open-ms", int64_t{1}, int64_t{3'600'000}));
  c.port_file = absl::GetFlag(FLAGS_port_file);
  c.store_fault_file = absl::GetFlag(FLAGS_store_fault_file);
  c.redis_url = absl::GetFlag(FLAGS_redis);
  if (!c.redis_url.empty()) {
    if (auto ep = sluice::redis::parse_url(c.redis_url); !ep.ok()) {
      fail("bad --redis URL: " + std::string(ep.status().message()));
    }
  }
  c.redis_timeout = std::chrono::milliseconds(
      in_range(FLAGS_redis_timeout_ms, "redis-timeout-ms", int64_t{1}, int64_t{60'000}));
  return c;
}

}  // namespace service
