// sluice/metrics/process_collector.hpp
//
// `sluice::metrics::process_collector` publishes the figures of the current process under the
// conventional Prometheus names, read from /proc/self at scrape time (nothing runs in between):
//
//   process_cpu_seconds_total       counter  user + system CPU time
//   process_start_time_seconds      gauge    start time, seconds since the Unix epoch
//   process_resident_memory_bytes   gauge    resident set size
//   process_virtual_memory_bytes    gauge    virtual memory size
//   process_open_fds                gauge    open file descriptors
//   process_max_fds                 gauge    the soft RLIMIT_NOFILE (+Inf when unlimited)
//   process_threads                 gauge    threads in the process
//
// Linux only: elsewhere `read()` returns Unimplemented and the collector emits nothing.
//
// Thread safety: stateless; may be used concurrently.
// Time: the start time is wall-clock (as Prometheus expects); nothing else reads a clock.
// Errors: `read()` returns Unavailable when /proc cannot be read; the collector then emits nothing.
//
// Example:
//   sluice::metrics::registry registry;
//   registry.add_collector(sluice::metrics::process_collector{}).release();  // for good
#pragma once

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/metrics/registry.hpp"

#if defined(__linux__)
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>
#endif

namespace sluice::metrics {

// The figures `process_collector` publishes, in base units.
struct process_stats {
  double cpu_seconds = 0;            // User + system CPU time.
  double start_time_seconds = 0;     // Since the Unix epoch.
  double resident_memory_bytes = 0;  // Resident set size.
  double virtual_memory_bytes = 0;   // Virtual memory size.
  double open_fds = 0;               // Open file descriptors.
  double max_fds = 0;                // Soft limit on descriptors (+Inf when unlimited).
  double threads = 0;                // Threads in the process.
};

class process_collector {
 public:
  // Reads the current figures. Allocates and does a few small file reads; meant for scrape time.
  static absl::StatusOr<process_stats> read() {
#if defined(__linux__)
    std::ifstream stat_file("/proc/self/stat");
    std::string line;
    if (!std::getline(stat_file, line)) {
      return absl::UnavailableError("cannot read /proc/self/stat");
    }
    // The command name (field 2) is in parentheses and may hold spaces or parentheses itself:
    // the fields after it start after the last ')'. Field 3 (state) is then index 0.
    const std::size_t close = line.rfind(')');
    if (close == std::string::npos) return absl::UnavailableError("malformed /proc/self/stat");
    std::istringstream rest(line.substr(close + 1));
    std::vector<std::string> fields;
    for (std::string f; rest >> f;) fields.push_back(f);
    if (fields.size() < 22) return absl::UnavailableError("short /proc/self/stat");
    const auto field = [&fields](int number) {  // The 1-based field number of proc(5).
      return std::strtod(fields[static_cast<std::size_t>(number - 3)].c_str(), nullptr);
    };

    const auto ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
    const auto page = static_cast<double>(::sysconf(_SC_PAGESIZE));
    if (ticks <= 0 || page <= 0) return absl::UnavailableError("sysconf failed");

    double boot_time = 0;
    std::ifstream proc_stat("/proc/stat");
    for (std::string l; std::getline(proc_stat, l);) {
      if (l.rfind("btime ", 0) == 0) {
        boot_time = std::strtod(l.c_str() + 6, nullptr);
        break;
      }
    }
    if (boot_time == 0) return absl::UnavailableError("no btime in /proc/stat");

    process_stats s;
    s.cpu_seconds = (field(14) + field(15)) / ticks;
    s.threads = field(20);
    s.start_time_seconds = boot_time + field(22) / ticks;
    s.virtual_memory_bytes = field(23);
    s.resident_memory_bytes = field(24) * page;

    DIR* dir = ::opendir("/proc/self/fd");
    if (dir == nullptr) return absl::UnavailableError("cannot list /proc/self/fd");
    const int own_fd = ::dirfd(dir);  // The listing's own descriptor is not the process's.
    double fds = 0;
    while (const dirent* entry = ::readdir(dir)) {
      const std::string name = entry->d_name;
      if (name == "." || name == ".." || name == std::to_string(own_fd)) continue;
      fds += 1;
    }
    ::closedir(dir);
    s.open_fds = fds;

    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return absl::UnavailableError("getrlimit failed");
    s.max_fds = limit.rlim_cur == RLIM_INFINITY ? std::numeric_limits<double>::infinity()
                                                : static_cast<double>(limit.rlim_cur);
    return s;
#else
    return absl::UnimplementedError("process metrics need Linux /proc");
#endif
  }

  // Emits the figures into `sink` (nothing when `read()` fails).
  void operator()(sample_sink& sink) const {
    const absl::StatusOr<process_stats> s = read();
    if (!s.ok()) return;
    sink.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                 s->cpu_seconds);
    sink.gauge("process_start_time_seconds",
               "Start time of the process since unix epoch in seconds.", s->start_time_seconds);
    sink.gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
               s->resident_memory_bytes);
    sink.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.",
               s->virtual_memory_bytes);
    sink.gauge("process_open_fds", "Number of open file descriptors.", s->open_fds);
    sink.gauge("process_max_fds", "Maximum number of open file descriptors.", s->max_fds);
    sink.gauge("process_threads", "Number of OS threads in the process.", s->threads);
  }
};

}  // namespace sluice::metrics
