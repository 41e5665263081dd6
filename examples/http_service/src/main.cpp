// main.cpp: sluice-service's entry point: flags, the asynchronous JSON logger, the application
// state, the server, and the signal-driven graceful drain (SIGTERM/SIGINT -> stop accepting,
// finish in-flight requests up to --drain-seconds, exit 0).
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <signal.h>

#include "absl/synchronization/mutex.h"
#include <spdlog/async.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "config.hpp"
#include "metrics.hpp"
#include "primitives.hpp"
#include "redis_mode.hpp"
#include "server.hpp"
#include "service.hpp"
#include "supervisor.hpp"
#include "user_store.hpp"

namespace {

// Queue of the asynchronous logger: deep enough to absorb bursts at full request rate; when the
// sink falls behind anyway, the oldest lines are dropped and counted (overrun_oldest) rather than
// stalling the event loops.
constexpr std::size_t kLogQueue = 64 * 1024;

std::shared_ptr<spdlog::logger> make_logger(const service::config& cfg) {
  spdlog::init_thread_pool(kLogQueue, 1);
  spdlog::sink_ptr sink;
  if (cfg.log_path == "-") {
    sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
  } else {
    sink = std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
        cfg.log_path, cfg.log_max_bytes, static_cast<std::size_t>(cfg.log_files));
  }
  auto log =
      std::make_shared<spdlog::async_logger>("sluice", std::move(sink), spdlog::thread_pool(),
                                             spdlog::async_overflow_policy::overrun_oldest);
  // One JSON object per line: the time (UTC, microseconds) and level come from the pattern, the
  // message carries the remaining "key":value pairs.
  log->set_formatter(std::make_unique<spdlog::pattern_formatter>(
      R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l",%v})", spdlog::pattern_time_type::utc));
  log->set_level(spdlog::level::from_str(cfg.log_level));
  log->flush_on(spdlog::level::warn);
  spdlog::flush_every(std::chrono::seconds(1));
  return log;
}

[[noreturn]] void die(const std::string& line, int code) {
  std::fprintf(stderr, "sluice-service: %s\n", line.c_str());
  spdlog::shutdown();
  std::exit(code);
}

}  // namespace

int main(int argc, char** argv) {
  // Distribution builds of Abseil (Debian's) keep absl::Mutex's deadlock detector on, which makes
  // every lock update a process-wide graph; a production binary turns it off.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  service::config cfg = service::load_config(argc, argv);
  if (cfg.processes > 1) return service::run_supervisor(cfg, argc, argv);

  // Signals are taken synchronously by the main thread (sigtimedwait); every other thread,
  // including the loops started below, inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  service::app a;
  a.cfg = cfg;
  std::string error;
  if (!a.proxies.parse(cfg.trusted_proxies, error)) die(error, 2);

  std::error_code fs_ec;
  std::filesystem::create_directories(cfg.data_dir, fs_ec);
  if (!fs_ec) std::filesystem::create_directories(cfg.upload_dir, fs_ec);
  if (fs_ec) die("cannot create --data-dir/--upload-dir: " + fs_ec.message(), 1);

  try {
    a.log = make_logger(cfg);
  } catch (const spdlog::spdlog_ex& e) {
    die(std::string("cannot open --log: ") + e.what(), 1);
  }
  a.metrics = std::make_unique<service::service_metrics>();
  a.prims = std::make_unique<service::primitives>(a);
  if (cfg.redis_url.empty()) {
    a.users = service::make_embedded_store(cfg.seed_users, cfg.store_fault_file);
  } else {
    // Waits a few seconds for Redis (and the seeding) so a service started with its Redis is
    // ready at once; a Redis that is down is retried in the background.
    auto redis = service::redis_mode::create(a, std::chrono::seconds(3));
    if (!redis.ok()) die(std::string(redis.status().message()), 2);
    a.redis = std::move(*redis);
    a.users = a.redis->make_user_store();
  }
  service::register_routes(a);

  service::server srv(a);
  if (absl::Status s = srv.listen(); !s.ok()) die(std::string(s.message()), 1);
  srv.start();
  SPDLOG_LOGGER_INFO(a.log,
                     "\"msg\":\"listening\",\"url\":\"http://{}:{}\",\"threads\":{},"
                     "\"store\":\"{}\"",
                     cfg.listen_host, srv.port(), cfg.threads, a.users->kind());
  if (!cfg.port_file.empty()) {
    std::string tmp = cfg.port_file + ".tmp";
    { std::ofstream(tmp) << srv.port() << "\n"; }
    std::filesystem::rename(tmp, cfg.port_file, fs_ec);  // atomic: readers never see it half
  }

  int sig = 0;
  do {
    sig = sigwaitinfo(&signals, nullptr);
  } while (sig < 0 && errno == EINTR);

  SPDLOG_LOGGER_INFO(a.log, "\"msg\":\"draining\",\"signal\":{},\"drain_seconds\":{}", sig,
                     cfg.drain.count());
  a.draining.store(true, std::memory_order_relaxed);
  srv.begin_drain();
  auto deadline = std::chrono::steady_clock::now() + cfg.drain;
  bool forced = false;
  while (!srv.stopped()) {
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      forced = true;
      break;
    }
    // Wait in short slices so the loops' exit is noticed promptly; a second signal cuts the
    // drain short.
    timespec slice{0, 20'000'000};
    if (sigtimedwait(&signals, nullptr, &slice) > 0) {
      forced = true;
      break;
    }
  }
  if (forced) {
    SPDLOG_LOGGER_WARN(a.log, "\"msg\":\"drain deadline passed, closing connections\"");
    srv.force_close();
  }
  srv.join();
  // The loops are gone: stop the Redis thread (its keeper logs) before the logger shuts down.
  a.users.reset();
  a.redis.reset();
  SPDLOG_LOGGER_INFO(a.log, "\"msg\":\"stopped\"");
  a.log->flush();
  spdlog::shutdown();
  return 0;
}
