// The header under test comes first: it must compile on its own.
// clang-format off
#include "sluice/metrics.hpp"
// clang-format on

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <latch>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <sluice/detail/metrics_cells.hpp>

#include "alloc_counter.hpp"
#include "catch.hpp"

namespace m = sluice::metrics;

namespace {

// Starts `n` threads running `body(thread_index)` and joins them.
template <class F>
void run_threads(int n, F body) {
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(n));
  for (int t = 0; t < n; ++t) threads.emplace_back([&body, t] { body(t); });
  for (auto& th : threads) th.join();
}

}  // namespace

TEST_CASE("metrics: counter sums the increments of every stripe", "[metrics]") {
  m::counter c(4);
  CHECK(c.value() == 0);
  c.inc();
  c.inc(41);
  CHECK(c.value() == 42);
  run_threads(3, [&c](int) { c.inc(100); });
  CHECK(c.value() == 342);
}

TEST_CASE("metrics: gauge sets, adds and reads back", "[metrics]") {
  m::gauge g;
  g.set(2.5);
  g.inc();
  g.add(-0.25);
  g.dec();
  CHECK(g.value() == 2.25);
  g.set(-7);
  CHECK(g.value() == -7);
}

TEST_CASE("metrics: update paths neither lock nor allocate", "[metrics]") {
  m::registry registry;
  auto family = registry.add_counter_family("calls_total", "Calls.", {"route"});
  REQUIRE(family.ok());
  m::counter& child = (*family)->with({"/a"});
  auto h = registry.add_histogram("h_seconds", "H.", m::histogram::default_bounds());
  auto lh = registry.add_latency_histogram("lh_seconds", "LH.");
  auto g = registry.add_gauge("g", "G.");
  REQUIRE(h.ok());
  REQUIRE(lh.ok());
  REQUIRE(g.ok());
  STATIC_REQUIRE(noexcept(child.inc()));
  m::histogram& hist = **h;
  m::latency_histogram& lat = **lh;
  STATIC_REQUIRE(noexcept(hist.observe(1.0)));
  STATIC_REQUIRE(noexcept(lat.observe_ns(1)));

  // The thread's first update claims its metrics slot; the runtime may allocate once for that
  // thread-local registration. The steady state is what must not allocate.
  child.inc();
  sluice_test::alloc_scope scope;
  for (int i = 0; i < 1000; ++i) {
    child.inc();
    (*h)->observe(0.001 * i);
    (*lh)->observe(std::chrono::microseconds(i));
    (*g)->add(1);
  }
  CHECK(scope.allocations() == 0);
  CHECK(child.value() == 1001);
}

TEST_CASE("metrics: every row sits on cache lines of its own", "[metrics]") {
  constexpr std::size_t line = sluice::detail::cache_line_size;
  for (const std::size_t width : {1u, 2u, 8u, 9u, 13u, 600u}) {
    sluice::detail::striped_words words(5, width);
    INFO("width " << width);
    REQUIRE(words.exclusive_rows() == 5);
    REQUIRE(words.rows() == 5 + sluice::detail::striped_words::shared_rows);
    CHECK(words.stride() >= width);
    CHECK((words.stride() * sizeof(std::uint64_t)) % line == 0);
    for (std::size_t r = 0; r < words.rows(); ++r) {
      CHECK(reinterpret_cast<std::uintptr_t>(words.row(r)) % line == 0);
    }
  }
  CHECK(sluice::detail::striped_words(100, 1).exclusive_rows() == 64);
  CHECK(sluice::detail::striped_words(0, 1).exclusive_rows() ==
        sluice::detail::metrics_default_stripes());
  CHECK(sluice::detail::metrics_default_stripes() >= 8);
  // The metric objects themselves start on a line (their read-only fields share no line).
  CHECK(alignof(m::counter) == line);
  CHECK(alignof(m::histogram) == line);
  CHECK(alignof(m::latency_histogram) == line);
  CHECK(alignof(m::gauge) == line);
  CHECK(sizeof(m::gauge) == line);
}

TEST_CASE("metrics: threads alive together write rows no other thread writes", "[metrics]") {
  sluice::detail::striped_words words(16, 1);
  const auto main_row = words.local();
  CHECK(main_row.exclusive);
  CHECK(main_row.words == words.local().words);  // stable for the thread
  constexpr int n = 6;
  std::vector<sluice::detail::striped_words::local_row> rows(n);
  std::latch all_recorded(n);
  run_threads(n, [&](int t) {
    rows[static_cast<std::size_t>(t)] = words.local();
    all_recorded.arrive_and_wait();  // no thread exits (and frees its slot) before all recorded
  });
  std::set<const void*> distinct{main_row.words};
  for (const auto& r : rows) {
    CHECK(r.exclusive);
    distinct.insert(r.words);
  }
  CHECK(distinct.size() == n + 1);
}

TEST_CASE("metrics: a thread's slot goes back to the pool when it exits", "[metrics]") {
  // This thread claims its own slot first (ctest runs each test case in a fresh process).
  const std::uint32_t mine = sluice::detail::current_metrics_slot();
  std::uint32_t first = 0;
  std::uint32_t second = 0;
  std::thread([&first] { first = sluice::detail::current_metrics_slot(); }).join();
  std::thread([&second] { second = sluice::detail::current_metrics_slot(); }).join();
  CHECK(first < sluice::detail::max_metrics_slots);
  CHECK(first == second);
  CHECK(sluice::detail::current_metrics_slot() == mine);  // this thread keeps its own
  CHECK(mine != first);
}

TEST_CASE("metrics: threads past the 64 slots share rows and stay exact", "[metrics]") {
  constexpr int n = 72;
  constexpr int per_thread = 1000;
  (void)sluice::detail::current_metrics_slot();  // the main thread holds a slot too
  m::counter c(64);
  m::histogram h(std::vector<double>{10, 100}, 64);
  std::atomic<int> shared{0};
  std::latch all_claimed(n);
  run_threads(n, [&](int t) {
    sluice::detail::striped_words probe(64, 1);
    if (!probe.local().exclusive) shared.fetch_add(1, std::memory_order_relaxed);
    all_claimed.arrive_and_wait();  // no thread exits (freeing its slot) before all have asked
    for (int i = 0; i < per_thread; ++i) {
      c.inc();
      h.observe(static_cast<double>((t + i) % 200));
    }
  });
  CHECK(shared.load() >= n + 1 - 64);  // the main thread holds a slot too
  CHECK(c.value() == static_cast<std::uint64_t>(n) * per_thread);
  const auto s = h.read();
  CHECK(s.count == static_cast<std::uint64_t>(n) * per_thread);
}

TEST_CASE("metrics: histogram bucket edges are inclusive upper bounds", "[metrics]") {
  const std::vector<double> bounds{1, 2, 5};
  m::histogram h(bounds, 2);
  CHECK(h.bucket_of(-std::numeric_limits<double>::infinity()) == 0);
  CHECK(h.bucket_of(0.5) == 0);
  CHECK(h.bucket_of(1) == 0);
  CHECK(h.bucket_of(1.0000001) == 1);
  CHECK(h.bucket_of(5) == 2);
  CHECK(h.bucket_of(5.5) == 3);
  CHECK(h.bucket_of(std::numeric_limits<double>::infinity()) == 3);
  CHECK(h.bucket_of(std::numeric_limits<double>::quiet_NaN()) == 3);
  for (const double v : {0.5, 1.0, 1.5, 2.0, 4.0, 9.0}) h.observe(v);
  const auto s = h.read();
  CHECK(s.counts == std::vector<std::uint64_t>{2, 2, 1, 1});
  CHECK(s.count == 6);
  CHECK(s.sum == 18.0);
  CHECK(s.bounds == bounds);
}

TEST_CASE("metrics: histogram bucket search matches a linear scan, short and long bounds",
          "[metrics]") {
  const std::size_t count = GENERATE(0u, 1u, 7u, 16u, 17u, 40u);
  const auto bounds = m::histogram::exponential_bounds(0.001, 1.5, count);
  m::histogram h(bounds, 1);
  std::mt19937_64 rng(count);
  std::uniform_real_distribution<double> dist(-0.01, 50.0);
  std::vector<double> values{0.0};
  for (const double b : bounds) values.push_back(b);
  for (int i = 0; i < 2000; ++i) values.push_back(dist(rng));
  for (const double v : values) {
    std::size_t expect = 0;
    while (expect < bounds.size() && !(v <= bounds[expect])) ++expect;
    INFO("v " << v << " bounds " << count);
    CHECK(h.bucket_of(v) == expect);
  }
}

TEST_CASE("metrics: histogram bounds are validated", "[metrics]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  CHECK(m::histogram::validate_bounds(std::vector<double>{}).ok());
  CHECK(m::histogram::validate_bounds(std::vector<double>{1, 2, inf}).ok());
  CHECK(m::histogram::validate_bounds(std::vector<double>{-1, 0, 1}).ok());
  CHECK(m::histogram::validate_bounds(std::vector<double>{2, 1}).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(m::histogram::validate_bounds(std::vector<double>{1, 1}).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(m::histogram::validate_bounds(std::vector<double>{1, nan}).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(m::histogram::validate_bounds(std::vector<double>{-inf, 1}).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(m::histogram::validate_bounds(std::vector<double>{inf, 1}).code() ==
        absl::StatusCode::kInvalidArgument);
  // A trailing +Inf is the implicit last bucket, not a second one.
  m::histogram h(std::vector<double>{1, inf}, 1);
  CHECK(h.bounds().size() == 1);
  CHECK(m::histogram::linear_bounds(1, 2, 3) == std::vector<double>{1, 3, 5});
  CHECK(m::histogram::exponential_bounds(1, 10, 3) == std::vector<double>{1, 10, 100});
}

TEST_CASE("metrics: latency buckets are contiguous with bounded relative width", "[metrics]") {
  const int bits = GENERATE(1, 3, 4, 7);
  INFO("bits " << bits);
  // Every bucket starts right after the previous one ends.
  std::uint64_t next = 0;
  for (std::size_t i = 0; i < 64u * (std::size_t{1} << bits) && next < (std::uint64_t{1} << 50);
       ++i) {
    const std::uint64_t upper = m::latency_histogram::bucket_upper_ns(bits, i);
    REQUIRE(upper >= next);
    REQUIRE(m::latency_histogram::bucket_index(bits, next) == i);
    REQUIRE(m::latency_histogram::bucket_index(bits, upper) == i);
    // Width relative to the bucket's lowest value (one-value buckets are exact).
    const double width = static_cast<double>(upper - next + 1);
    if (upper > next) REQUIRE(width / static_cast<double>(next) <= std::ldexp(1.0, -bits));
    next = upper + 1;
  }
  // The default options keep 592 buckets.
  if (bits == 4)
    CHECK(m::latency_histogram(m::latency_histogram::options{.stripes = 1}).bucket_count() == 592);
}

TEST_CASE("metrics: latency percentiles are within the precision of the exact ones", "[metrics]") {
  m::latency_histogram h({.precision_bits = 4, .stripes = 2});
  CHECK(std::isnan(h.read().quantile(0.5)));
  std::mt19937_64 rng(7);
  std::lognormal_distribution<double> dist(std::log(2e6), 1.2);  // around 2 ms, long tail
  std::vector<std::uint64_t> values;
  std::uint64_t sum = 0;
  for (int i = 0; i < 20000; ++i) {
    const auto v = static_cast<std::uint64_t>(dist(rng));
    values.push_back(v);
    sum += v;
    h.observe(std::chrono::nanoseconds(v));
  }
  std::sort(values.begin(), values.end());
  const auto s = h.read();
  CHECK(s.count == values.size());
  CHECK(s.sum_ns == sum);
  for (const double q : {0.0, 0.5, 0.9, 0.99, 0.999, 1.0}) {
    const auto rank = std::max<std::size_t>(
        1, static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size()))));
    const double exact = static_cast<double>(values[rank - 1]) * 1e-9;
    const double got = s.quantile(q);
    INFO("q " << q << " exact " << exact << " got " << got);
    CHECK(got >= exact * (1 - 1e-12));
    CHECK(got <= exact * (1 + 1.0 / 16) + 1e-9);
  }
}

TEST_CASE("metrics: latency values past max share the top bucket, sums stay exact", "[metrics]") {
  m::latency_histogram h({.precision_bits = 2, .max = std::chrono::microseconds(1), .stripes = 1});
  h.observe(std::chrono::seconds(3));
  h.observe(std::chrono::nanoseconds(-5));  // counts as 0
  const auto s = h.read();
  CHECK(s.count == 2);
  CHECK(s.counts.front() == 1);
  CHECK(s.counts.back() == 1);
  CHECK(s.sum_ns == 3'000'000'000u);
  CHECK(s.quantile(1.0) ==
        static_cast<double>(m::latency_histogram::bucket_upper_ns(2, s.counts.size() - 1)) * 1e-9);
  CHECK(m::latency_histogram::validate({.precision_bits = 0}).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(m::latency_histogram::validate({.precision_bits = 11}).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(m::latency_histogram::validate({.max = std::chrono::nanoseconds(0)}).code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("metrics: the registry rejects bad names with InvalidArgument", "[metrics]") {
  m::registry r;
  for (const char* bad : {"", "1abc", "a-b", "a b", "é", "a\n"}) {
    INFO("name '" << bad << "'");
    CHECK(r.add_counter(bad, "x").status().code() == absl::StatusCode::kInvalidArgument);
  }
  CHECK(r.add_counter("ns:sub_total", "colons are allowed").ok());
  CHECK(r.add_counter("_x", "leading underscore").ok());
  for (const char* bad : {"", "__reserved", "1a", "a:b", "a-b"}) {
    INFO("label '" << bad << "'");
    CHECK(r.add_gauge_family("g_bad", "x", {bad}).status().code() ==
          absl::StatusCode::kInvalidArgument);
  }
  CHECK(r.add_gauge_family("g_rep", "x", {"a", "b", "a"}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(r.add_histogram_family("h", "x", {"le"}, m::histogram::default_bounds()).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(r.add_latency_histogram_family("l", "x", {"quantile"}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(r.add_histogram("h", "x", std::vector<double>{3, 2}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(r.add_latency_histogram("l", "x", {.precision_bits = 0}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  // `le` is an ordinary label outside histograms.
  CHECK(r.add_gauge_family("g_le", "x", {"le"}).ok());
}

TEST_CASE("metrics: re-registration returns the same metric or AlreadyExists", "[metrics]") {
  m::registry r;
  auto a = r.add_counter_family("req_total", "Requests.", {"code"});
  REQUIRE(a.ok());
  auto again = r.add_counter_family("req_total", "Requests.", {"code"});
  REQUIRE(again.ok());
  CHECK(*again == *a);
  const auto exists = absl::StatusCode::kAlreadyExists;
  CHECK(r.add_gauge_family("req_total", "Requests.", {"code"}).status().code() == exists);
  CHECK(r.add_counter_family("req_total", "Other help.", {"code"}).status().code() == exists);
  CHECK(r.add_counter_family("req_total", "Requests.", {"method"}).status().code() == exists);
  CHECK(r.add_counter("req_total", "Requests.").status().code() == exists);

  auto h = r.add_histogram("lat_seconds", "L.", std::vector<double>{1, 2});
  REQUIRE(h.ok());
  CHECK(*r.add_histogram("lat_seconds", "L.", std::vector<double>{1, 2}) == *h);
  CHECK(r.add_histogram("lat_seconds", "L.", std::vector<double>{1, 3}).status().code() == exists);
  // A histogram owns its _bucket/_sum/_count series names, and the other way round.
  CHECK(r.add_counter("lat_seconds_count", "x").status().code() == exists);
  CHECK(r.add_gauge("lat_seconds_bucket", "x").status().code() == exists);
  REQUIRE(r.add_gauge("q_sum", "x").ok());
  CHECK(r.add_latency_histogram("q", "x").status().code() == exists);
  CHECK(r.add_histogram("q", "x", std::vector<double>{1}).status().code() == exists);
  auto l = r.add_latency_histogram("wait_seconds", "W.", {.precision_bits = 3});
  REQUIRE(l.ok());
  CHECK(*r.add_latency_histogram("wait_seconds", "W.", {.precision_bits = 3}) == *l);
  CHECK(r.add_latency_histogram("wait_seconds", "W.", {.precision_bits = 5}).status().code() ==
        exists);
}

TEST_CASE("metrics: a family hands out one child per label-value combination", "[metrics]") {
  m::registry r;
  auto f = r.add_counter_family("hits_total", "Hits.", {"cache", "tier"});
  REQUIRE(f.ok());
  m::counter& a = (*f)->with({"users", "l1"});
  m::counter& b = (*f)->with({"users", "l2"});
  const std::vector<std::string> values{"users", "l1"};
  CHECK(&a == &(*f)->with(values));
  CHECK(&a != &b);
  CHECK((*f)->size() == 2);
  a.inc(3);
  std::vector<std::string> seen;
  (*f)->for_each([&seen](const std::vector<std::string>& v, const m::counter& c) {
    seen.push_back(v[1] + "=" + std::to_string(c.value()));
  });
  CHECK(seen == std::vector<std::string>{"l1=3", "l2=0"});
}

TEST_CASE("metrics: counts stay exact under concurrent updates and scrapes", "[metrics]") {
  const int threads = GENERATE(1, 2, 4, 8);
  constexpr int per_thread = 20000;
  INFO("threads " << threads);
  // Few stripes, so that threads share them and the atomic adds are really exercised.
  m::registry r({.stripes = 2});
  auto c = r.add_counter("ops_total", "Ops.");
  auto h = r.add_histogram("size_bytes", "Sizes.", std::vector<double>{10, 100, 1000});
  auto l = r.add_latency_histogram("op_seconds", "Op latency.");
  auto fam = r.add_counter_family("by_thread_total", "Per thread.", {"thread"});
  auto g = r.add_gauge("inflight", "In flight.");
  REQUIRE(c.ok());
  REQUIRE(h.ok());
  REQUIRE(l.ok());
  REQUIRE(fam.ok());
  REQUIRE(g.ok());

  std::atomic<bool> done{false};
  std::size_t scrapes = 0;
  std::thread scraper([&] {
    do {
      scrapes += r.render().empty() ? 0 : 1;
    } while (!done.load(std::memory_order_acquire));
  });
  run_threads(threads, [&](int t) {
    m::counter& mine = (*fam)->with({std::to_string(t % 3)});
    for (int i = 0; i < per_thread; ++i) {
      (*c)->inc();
      (*h)->observe(static_cast<double>(i % 2000));
      (*l)->observe_ns(static_cast<std::uint64_t>(i));
      mine.inc(2);
      (*g)->add(1);
    }
  });
  done.store(true, std::memory_order_release);
  scraper.join();
  CHECK(scrapes >= 1);

  const auto total = static_cast<std::uint64_t>(threads) * per_thread;
  CHECK((*c)->value() == total);
  const auto hs = (*h)->read();
  CHECK(hs.count == total);
  // i % 2000 over 20000 iterations: 10 rounds of 0..1999 per thread.
  const auto rounds = static_cast<std::uint64_t>(threads) * (per_thread / 2000);
  CHECK(hs.counts ==
        std::vector<std::uint64_t>{11 * rounds, 90 * rounds, 900 * rounds, 999 * rounds});
  CHECK(hs.sum == static_cast<double>(rounds) * (1999.0 * 2000.0 / 2));
  const auto ls = (*l)->read();
  CHECK(ls.count == total);
  CHECK(ls.sum_ns == static_cast<std::uint64_t>(threads) * (per_thread - 1) * per_thread / 2);
  std::uint64_t by_thread = 0;
  (*fam)->for_each(
      [&](const std::vector<std::string>&, const m::counter& x) { by_thread += x.value(); });
  CHECK(by_thread == 2 * total);
  CHECK((*fam)->size() == static_cast<std::size_t>(std::min(threads, 3)));
  CHECK((*g)->value() == static_cast<double>(total));
}

TEST_CASE("metrics: collectors emit at scrape time until their registration ends", "[metrics]") {
  m::registry r;
  int calls = 0;
  {
    auto reg = r.add_collector([&calls](m::sample_sink& sink) {
      ++calls;
      sink.gauge("pool_idle", "Idle connections.", 3, {{"pool", "db"}});
      sink.counter("pool_acquired_total", "Acquisitions.", 12);
    });
    CHECK(reg.active());
    CHECK(calls == 0);  // nothing runs between scrapes
    const std::string text = r.render();
    CHECK(calls == 1);
    CHECK(text.find("pool_idle{pool=\"db\"} 3\n") != std::string::npos);
    CHECK(text.find("# TYPE pool_acquired_total counter\npool_acquired_total 12\n") !=
          std::string::npos);
  }
  CHECK(r.render().find("pool_idle") == std::string::npos);
  CHECK(calls == 1);

  // Moved registrations keep the collector; release() keeps it for good.
  m::collector_registration kept;
  {
    auto reg = r.add_collector([](m::sample_sink& sink) { sink.gauge("kept", "K.", 1); });
    kept = std::move(reg);
    CHECK_FALSE(reg.active());
  }
  CHECK(r.render().find("kept 1") != std::string::npos);
  r.add_collector([](m::sample_sink& sink) { sink.gauge("forever", "F.", 2); }).release();
  kept.reset();
  const std::string text = r.render();
  CHECK(text.find("kept 1") == std::string::npos);
  CHECK(text.find("forever 2") != std::string::npos);
}

TEST_CASE("metrics: a registration may outlive its registry", "[metrics]") {
  m::collector_registration reg;
  {
    m::registry r;
    reg = r.add_collector([](m::sample_sink&) {});
    CHECK(reg.active());
  }
  CHECK_FALSE(reg.active());
  reg.reset();  // does nothing, does not crash
}

TEST_CASE("metrics: bad, duplicate and clashing collected samples are dropped", "[metrics]") {
  m::registry r;
  REQUIRE(r.add_histogram("lat_seconds", "L.", std::vector<double>{1}).ok());
  std::size_t dropped = 0;
  auto reg = r.add_collector([&dropped](m::sample_sink& sink) {
    sink.gauge("ok", "fine", 1, {{"a", "x"}});
    sink.gauge("ok", "fine", 2, {{"a", "x"}});            // duplicate series
    sink.counter("ok", "fine", 3, {{"a", "y"}});          // other type, same name
    sink.gauge("bad-name", "x", 1);                       // invalid name
    sink.gauge("ok2", "x", 1, {{"__a", "v"}});            // reserved label name
    sink.gauge("ok3", "x", 1, {{"a", "1"}, {"a", "2"}});  // repeated label
    const std::vector<m::sample_sink::label> labels{{"a", "z"}};
    sink.gauge("ok", "fine", 4, labels);
    sink.gauge("lat_seconds_count", "clashes with the histogram", 9);
    dropped = sink.dropped();
  });
  const std::string text = r.render();
  CHECK(dropped == 5);
  CHECK(text.find("ok{a=\"x\"} 1\n") != std::string::npos);
  CHECK(text.find("ok{a=\"z\"} 4\n") != std::string::npos);
  CHECK(text.find("ok{a=\"y\"}") == std::string::npos);
  CHECK(text.find("bad-name") == std::string::npos);
  CHECK(text.find("ok2") == std::string::npos);
  CHECK(text.find("ok3") == std::string::npos);
  CHECK(text.find("lat_seconds_count 0\n") != std::string::npos);
  CHECK(text.find("lat_seconds_count 9") == std::string::npos);
}
