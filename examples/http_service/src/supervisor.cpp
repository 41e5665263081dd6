// supervisor.cpp: `--processes N` mode (see supervisor.hpp).
#include "supervisor.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <string>
#include <vector>

#include <netdb.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace service {
namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Restart backoff: 100 ms doubling to 10 s; a worker that lived 30 s resets it.
constexpr auto kBackoffFirst = 100ms;
constexpr auto kBackoffMax = 10s;
constexpr auto kHealthyAfter = 30s;
// A replacement worker gets this long to start listening before its predecessor is drained.
constexpr auto kOverlap = 1s;

void log_line(const std::string& fields) {
  std::fprintf(stderr, "{\"msg\":\"supervisor\",%s}\n", fields.c_str());
  std::fflush(stderr);
}

struct slot {
  pid_t pid = -1;
  clock_type::time_point started{};
  clock_type::time_point next_start{};
  int failures = 0;
  pid_t retiring = -1;  // the predecessor being drained during a replacement
  clock_type::time_point retire_at{};
  bool retire_signalled = false;
};

// Binds (without listening) a SO_REUSEPORT socket on host:port so that port 0 resolves to one
// concrete port for every worker and the port stays reserved while the supervisor runs.
int reserve_port(const config& cfg, std::uint16_t& port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string service = std::to_string(cfg.listen_port);
  if (getaddrinfo(cfg.listen_host.c_str(), service.c_str(), &hints, &res) != 0 || res == nullptr) {
    return -1;
  }
  int fd = ::socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
  int one = 1;
  if (fd >= 0 && (::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
                  ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
                  ::bind(fd, res->ai_addr, res->ai_addrlen) != 0)) {
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) return -1;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return fd;
}

std::uint64_t rss_bytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/statm");
  std::uint64_t size = 0;
  std::uint64_t resident = 0;
  if (!(in >> size >> resident)) return 0;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

class supervisor {
 public:
  supervisor(const config& cfg, int argc, char** argv, std::string listen)
      : cfg_(cfg), slots_(static_cast<std::size_t>(cfg.processes)) {
    for (int i = 0; i < argc; ++i) args_.emplace_back(argv[i]);
    args_.push_back("--processes=1");
    args_.push_back("--listen=" + std::move(listen));
  }

  int run(const sigset_t& signals) {
    bool stopping = false;
    clock_type::time_point stop_deadline{};
    clock_type::time_point next_rss_check = clock_type::now();
    for (;;) {
      auto now = clock_type::now();
      if (!stopping) {
        for (auto& s : slots_) {
          if (s.pid < 0 && now >= s.next_start) spawn(s);
        }
      }
      timespec slice{0, 100'000'000};
      int sig = sigtimedwait(&signals, nullptr, &slice);
      now = clock_type::now();
      if (sig == SIGCHLD || sig < 0) reap(now, stopping);
      if (sig == SIGHUP && !stopping) {
        log_line("\"event\":\"rolling restart\"");
        for (std::size_t i = 0; i < slots_.size(); ++i) roll_.push_back(i);
      }
      if ((sig == SIGTERM || sig == SIGINT) && !stopping) {
        stopping = true;
        stop_deadline = now + cfg_.drain + 5s;
        log_line("\"event\":\"stopping\",\"signal\":" + std::to_string(sig));
        signal_all(SIGTERM);
      }
      if (stopping) {
        if (live() == 0) break;
        if (now >= stop_deadline) signal_all(SIGKILL);
        continue;
      }
      step_replacements(now);
      if (cfg_.max_rss_bytes > 0 && now >= next_rss_check) {
        next_rss_check = now + 1s;
        check_memory();
      }
    }
    log_line("\"event\":\"stopped\"");
    return 0;
  }

 private:
  void spawn(slot& s) {
    std::vector<char*> argv;
    for (auto& a : args_) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
      // A worker outlives no supervisor: if the supervisor dies (even by SIGKILL), the worker
      // gets SIGTERM and drains.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      sigset_t none;
      sigemptyset(&none);
      pthread_sigmask(SIG_SETMASK, &none, nullptr);
      ::execv("/proc/self/exe", argv.data());
      _exit(127);
    }
    if (pid < 0) {
      log_line("\"event\":\"fork failed\",\"error\":\"" + std::string(std::strerror(errno)) + "\"");
      s.next_start = clock_type::now() + kBackoffMax;
      return;
    }
    s.pid = pid;
    s.started = clock_type::now();
    log_line("\"event\":\"worker started\",\"pid\":" + std::to_string(pid));
  }

  void reap(clock_type::time_point now, bool stopping) {
    int status = 0;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      std::string how = WIFSIGNALED(status) ? "\"signal\":" + std::to_string(WTERMSIG(status))
                                            : "\"status\":" + std::to_string(WEXITSTATUS(status));
      for (auto& s : slots_) {
        if (s.retiring == pid) {
          s.retiring = -1;
          log_line("\"event\":\"worker retired\",\"pid\":" + std::to_string(pid) + "," + how);
        } else if (s.pid == pid) {
          s.pid = -1;
          if (now - s.started >= kHealthyAfter) s.failures = 0;
          auto delay = std::min<clock_type::duration>(
              kBackoffFirst * (1 << std::min(s.failures, 10)), kBackoffMax);
          ++s.failures;
          s.next_start = now + delay;
          if (!stopping) {
            log_line("\"event\":\"worker exited\",\"pid\":" + std::to_string(pid) + "," + how +
                     ",\"restart_in_ms\":" +
                     std::to_string(
                         std::chrono::duration_cast<std::chrono::milliseconds>(delay).count()));
          }
        }
      }
    }
  }

  // Starts the replacement of slot i: a new worker now, the old one drained after kOverlap.
  void replace(slot& s, const char* why) {
    if (s.pid < 0) return;
    log_line("\"event\":\"replacing worker\",\"pid\":" + std::to_string(s.pid) + ",\"why\":\"" +
             why + "\"");
    s.retiring = s.pid;
    s.retire_at = clock_type::now() + kOverlap;
    s.retire_signalled = false;
    s.pid = -1;
    spawn(s);
  }

  bool replacing() const {
    return std::any_of(slots_.begin(), slots_.end(), [](const slot& s) { return s.retiring > 0; });
  }

  void step_replacements(clock_type::time_point now) {
    for (auto& s : slots_) {
      if (s.retiring > 0 && !s.retire_signalled && now >= s.retire_at) {
        ::kill(s.retiring, SIGTERM);
        s.retire_signalled = true;
      }
    }
    // One replacement at a time, so the port always has N (or N+1) workers behind it.
    if (!replacing() && !roll_.empty()) {
      std::size_t i = roll_.front();
      roll_.pop_front();
      replace(slots_[i], "SIGHUP");
    }
  }

  void check_memory() {
    if (replacing()) return;
    for (auto& s : slots_) {
      if (s.pid > 0 && rss_bytes(s.pid) > cfg_.max_rss_bytes) {
        replace(s, "over --max-rss-mb");
        return;
      }
    }
  }

  void signal_all(int sig) {
    for (auto& s : slots_) {
      if (s.pid > 0) ::kill(s.pid, sig);
      if (s.retiring > 0) ::kill(s.retiring, sig);
    }
  }

  int live() const {
    int n = 0;
    for (const auto& s : slots_) n += (s.pid > 0) + (s.retiring > 0);
    return n;
  }

  const config& cfg_;
  std::vector<std::string> args_;
  std::vector<slot> slots_;
  std::deque<std::size_t> roll_;
};

}  // namespace

int run_supervisor(const config& cfg, int argc, char** argv) {
  sigset_t signals;
  sigemptyset(&signals);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&signals, sig);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::uint16_t port = 0;
  int reserved = reserve_port(cfg, port);
  if (reserved < 0) {
    std::fprintf(stderr, "sluice-service: cannot bind %s:%u: %s\n", cfg.listen_host.c_str(),
                 static_cast<unsigned>(cfg.listen_port), std::strerror(errno));
    return 1;
  }
  std::string host = cfg.listen_host.find(':') != std::string::npos ? "[" + cfg.listen_host + "]"
                                                                    : cfg.listen_host;
  log_line("\"event\":\"supervising\",\"processes\":" + std::to_string(cfg.processes) +
           ",\"url\":\"http://" + host + ":" + std::to_string(port) + "\"");
  supervisor sup(cfg, argc, argv, host + ":" + std::to_string(port));
  int rc = sup.run(signals);
  ::close(reserved);
  return rc;
}

}  // namespace service
