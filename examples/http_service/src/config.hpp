// config.hpp: the service's settings, read from command-line flags and SLUICE_<NAME> variables.
//
// Every flag may also come from the environment as SLUICE_<FLAG NAME IN CAPITALS> (dashes become
// underscores); the command line wins over the environment. A bad flag or value is reported by
// load_config() as one line and the process exits with status 2.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace service {

struct config {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 8080;
  int threads = 1;
  int max_connections = 10000;      // per process; over it: 503 + Retry-After
  int processes = 1;                // > 1: supervisor mode (supervisor.cpp)
  std::uint64_t max_rss_bytes = 0;  // supervisor: replace a worker above this; 0: no limit
  std::string data_dir;
  std::string upload_dir;
  std::uint64_t max_upload_bytes = 100ull << 20;
  std::vector<std::string> trusted_proxies;
  std::string log_path = "-";
  std::string log_level = "info";
  std::uint64_t log_max_bytes = 100ull << 20;
  int log_files = 5;
  int seed_users = 1000;
  std::chrono::seconds drain{10};
  std::chrono::seconds header_timeout{10};
  std::chrono::seconds idle_timeout{75};
  std::chrono::seconds io_timeout{60};
  std::uint64_t rate_limit = 1000;  // per client per second; 0 turns rate limiting off
  std::uint64_t rate_burst = 2000;
  int offload_threads = 1;
  int offload_queue = 1024;
  std::chrono::milliseconds cache_ttl{60'000};
  std::chrono::milliseconds stale_for{600'000};
  std::chrono::milliseconds breaker_open{5'000};
  std::string port_file;
  std::string store_fault_file;
  // Redis mode (empty: the embedded default). Validated by load_config with
  // sluice::redis::parse_url.
  std::string redis_url;
  std::chrono::milliseconds redis_timeout{250};  // bound on each Redis command
};

// Parses argv and the environment into a config. Prints help and exits 0 on --help; prints one
// line to stderr and exits 2 on an unknown flag, a malformed value or a value out of range.
config load_config(int argc, char** argv);

}  // namespace service
