// cache_sim: replays a cache access trace through sluice::cache and prints the hit ratio.
//
// Usage:
//   cache_sim TRACE [--format arc|lirs] [--capacity N[,N...]] [--policy tinylfu|lru|both]
//             [--expect-min PCT] [--compare-lru [POINTS]] [--seed N]
//
// TRACE is gzip-compressed or plain text:
//   arc   lines "start count ignored reqno": the count consecutive keys start..start+count-1
//   lirs  one integer key per line; lines holding "*" are skipped
// The format is detected from the first line unless given.
//
// Each request is a get(); a miss is followed by a put() (cache-aside), on a one-shard cache
// without expiry, so the figure is the policy's and nothing else's.
//
// --expect-min PCT     exit 1 if the tinylfu hit ratio (or the one policy run) is below PCT at any
//                      capacity given.
// --compare-lru [PTS]  also run LRU and exit 1 if tinylfu is more than PTS points (default 1)
//                      below it at any capacity.
// --seed N             seeds the key hash (default 0); the figures vary by a few tenths of a
//                      point between seeds, as they do between runs of a process using absl::Hash.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <zlib.h>

#include <sluice/cache.hpp>

namespace {

struct args {
  std::string path;
  std::string format;  // "", "arc", "lirs"
  std::vector<std::size_t> capacities{1000};
  std::string policy = "tinylfu";
  double expect_min = -1;
  double compare_lru = -1;
  std::uint64_t seed = 0;
};

// A fixed hash (splitmix64 of key ^ seed) instead of absl::Hash, whose per-process salt would make
// every run's sketch collisions, and so its hit ratio, differ slightly (by up to ~1 point).
std::uint64_t hash_seed = 0;
struct seeded_hash {
  std::size_t operator()(std::uint64_t k) const noexcept {
    return static_cast<std::size_t>(sluice::detail::mix64(k ^ hash_seed));
  }
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "cache_sim: %s\nusage: cache_sim TRACE [--format arc|lirs] [--capacity N[,N...]] "
               "[--policy tinylfu|lru|both] [--expect-min PCT] [--compare-lru [POINTS]]\n",
               why);
  std::exit(2);
}

std::vector<std::size_t> parse_list(const char* s) {
  std::vector<std::size_t> out;
  while (*s != '\0') {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(s, &end, 10);
    if (end == s || v == 0) usage("bad --capacity");
    out.push_back(static_cast<std::size_t>(v));
    s = (*end == ',') ? end + 1 : end;
    if (*end != ',' && *end != '\0') usage("bad --capacity");
  }
  return out;
}

args parse(int argc, char** argv) {
  args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value for " + arg).c_str());
      return argv[++i];
    };
    if (arg == "--format") {
      a.format = value();
      if (a.format != "arc" && a.format != "lirs") usage("bad --format");
    } else if (arg == "--capacity") {
      a.capacities = parse_list(value());
    } else if (arg == "--policy") {
      a.policy = value();
      if (a.policy != "tinylfu" && a.policy != "lru" && a.policy != "both") usage("bad --policy");
    } else if (arg == "--expect-min") {
      a.expect_min = std::strtod(value(), nullptr);
    } else if (arg == "--seed") {
      a.seed = std::strtoull(value(), nullptr, 10);
    } else if (arg == "--compare-lru") {
      a.compare_lru = 1.0;
      if (i + 1 < argc && argv[i + 1][0] != '-') a.compare_lru = std::strtod(argv[++i], nullptr);
    } else if (!arg.empty() && arg[0] == '-') {
      usage(("unknown flag " + arg).c_str());
    } else if (a.path.empty()) {
      a.path = arg;
    } else {
      usage("more than one trace");
    }
  }
  if (a.path.empty()) usage("no trace given");
  return a;
}

// Reads the whole trace (gzopen reads plain files as they are).
bool load(const args& a, std::vector<std::uint64_t>& keys) {
  gzFile f = gzopen(a.path.c_str(), "rb");
  if (f == nullptr) return false;
  std::string format = a.format;
  char line[512];
  while (gzgets(f, line, sizeof line) != nullptr) {
    if (std::strchr(line, '*') != nullptr) continue;
    unsigned long long start = 0, count = 0;
    char rest[2][64];
    const int fields = std::sscanf(line, "%llu %llu %63s %63s", &start, &count, rest[0], rest[1]);
    if (fields <= 0) continue;
    if (format.empty()) format = fields >= 2 ? "arc" : "lirs";
    if (format == "arc") {
      if (fields < 2) continue;
      for (unsigned long long k = 0; k < count; ++k) keys.push_back(start + k);
    } else {
      keys.push_back(start);
    }
  }
  gzclose(f);
  return true;
}

double replay(const std::vector<std::uint64_t>& keys, std::size_t capacity,
              sluice::eviction_policy policy, std::uint64_t seed) {
  using cache_type =
      sluice::cache<std::uint64_t, std::uint8_t, std::chrono::steady_clock, seeded_hash>;
  // Caller maintenance: each hit reaches the policy before the next write, so a replay is exact
  // and deterministic (the background thread would apply them a little later, or drop some).
  cache_type c({.max_entries = capacity,
                .policy = policy,
                .shards = 1,
                .background_sweep = false,
                .maintenance = sluice::cache_maintenance::caller});
  hash_seed = seed;
  std::uint64_t hits = 0;
  for (std::uint64_t k : keys) {
    if (c.get(k)) {
      ++hits;
    } else {
      c.put(k, 1);
    }
  }
  return keys.empty() ? 0.0 : 100.0 * static_cast<double>(hits) / static_cast<double>(keys.size());
}

}  // namespace

int main(int argc, char** argv) {
  const args a = parse(argc, argv);
  std::vector<std::uint64_t> keys;
  if (!load(a, keys)) {
    std::fprintf(stderr, "cache_sim: cannot read %s\n", a.path.c_str());
    return 2;
  }
  const bool run_tinylfu = a.policy != "lru";
  const bool run_lru = a.policy != "tinylfu" || a.compare_lru >= 0;
  std::printf("trace %s: %zu requests\n", a.path.c_str(), keys.size());
  std::printf("%10s %10s %10s\n", "capacity", run_tinylfu ? "tinylfu %" : "",
              run_lru ? "lru %" : "");
  int status = 0;
  for (std::size_t cap : a.capacities) {
    const double t = run_tinylfu ? replay(keys, cap, sluice::eviction_policy::tinylfu, a.seed) : -1;
    const double l = run_lru ? replay(keys, cap, sluice::eviction_policy::lru, a.seed) : -1;
    std::printf("%10zu", cap);
    if (run_tinylfu)
      std::printf(" %10.2f", t);
    else
      std::printf(" %10s", "");
    if (run_lru) std::printf(" %10.2f", l);
    std::printf("\n");
    const double measured = run_tinylfu ? t : l;
    if (a.expect_min >= 0 && measured < a.expect_min) {
      std::printf("FAIL: capacity %zu: %.2f %% < expected minimum %.2f %%\n", cap, measured,
                  a.expect_min);
      status = 1;
    }
    if (a.compare_lru >= 0 && run_tinylfu && t < l - a.compare_lru) {
      std::printf(
          "FAIL: capacity %zu: tinylfu %.2f %% is more than %.2f points below lru %.2f %%\n", cap,
          t, a.compare_lru, l);
      status = 1;
    }
  }
  return status;
}
