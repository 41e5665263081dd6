// The header under test comes first: it must compile on its own.
// clang-format off
#include <sluice/metrics/registry.hpp>
// clang-format on

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <sluice/metrics/process_collector.hpp>

#include "catch.hpp"

namespace m = sluice::metrics;

namespace {

// ---- A small parser of the text format 0.0.4, and the invariants promtool does not check -------

struct sample {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;  // unescaped values, in output order
  double value = 0;
};

struct group {
  std::string name;
  std::string type = "untyped";
  std::string help;
  int help_lines = 0;
  int type_lines = 0;
  std::vector<sample> samples;
};

struct exposition {
  std::vector<group> groups;
  std::vector<std::string> errors;
};

bool parse_value(std::string_view text, double& out) {
  if (text == "+Inf") {
    out = INFINITY;
  } else if (text == "-Inf") {
    out = -INFINITY;
  } else if (text == "NaN") {
    out = NAN;
  } else {
    const std::string s(text);
    char* end = nullptr;
    out = std::strtod(s.c_str(), &end);
    return !s.empty() && end == s.c_str() + s.size();
  }
  return true;
}

bool is_name_char(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         (!first && c >= '0' && c <= '9');
}

// Returns whether `name` is a series of group `g` (x, or x_bucket/_sum/_count by type).
bool belongs(const group& g, const std::string& name) {
  if (name == g.name) return g.type != "histogram";
  if (g.type == "histogram") {
    return name == g.name + "_bucket" || name == g.name + "_sum" || name == g.name + "_count";
  }
  if (g.type == "summary") return name == g.name + "_sum" || name == g.name + "_count";
  return false;
}

exposition parse(const std::string& text) {
  exposition out;
  std::set<std::string> seen_groups;
  auto start_group = [&](const std::string& name) -> group& {
    if (out.groups.empty() || out.groups.back().name != name) {
      if (!seen_groups.insert(name).second) out.errors.push_back("group split: " + name);
      group g;
      g.name = name;
      out.groups.push_back(std::move(g));
    }
    return out.groups.back();
  };
  if (!text.empty() && text.back() != '\n') out.errors.push_back("no final line feed");
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t eol = text.find('\n', pos);
    const std::string line = text.substr(pos, eol - pos);
    pos = eol == std::string::npos ? text.size() : eol + 1;
    if (line.empty()) {
      out.errors.push_back("empty line");
      continue;
    }
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const std::string rest = line.substr(7);
      const std::size_t sp = rest.find(' ');
      const std::string name = rest.substr(0, sp);
      const std::string arg = sp == std::string::npos ? "" : rest.substr(sp + 1);
      group& g = start_group(name);
      if (line[2] == 'H') {
        ++g.help_lines;
        g.help = arg;
      } else {
        ++g.type_lines;
        g.type = arg;
        if (!g.samples.empty()) out.errors.push_back("TYPE after samples: " + name);
      }
      continue;
    }
    if (line[0] == '#') continue;
    sample s;
    std::size_t i = 0;
    while (i < line.size() && is_name_char(line[i], i == 0)) ++i;
    s.name = line.substr(0, i);
    if (s.name.empty()) {
      out.errors.push_back("bad sample line: " + line);
      continue;
    }
    bool ok = true;
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (ok && i < line.size() && line[i] != '}') {
        const std::size_t name_start = i;
        while (i < line.size() && is_name_char(line[i], i == name_start) && line[i] != ':') ++i;
        std::string label = line.substr(name_start, i - name_start);
        if (label.empty() || line.compare(i, 2, "=\"") != 0) {
          ok = false;
          break;
        }
        i += 2;
        std::string value;
        while (i < line.size() && line[i] != '"') {
          if (line[i] == '\\' && i + 1 < line.size()) {
            const char e = line[i + 1];
            if (e == 'n') {
              value += '\n';
            } else if (e == '\\' || e == '"') {
              value += e;
            } else {
              ok = false;
            }
            i += 2;
          } else {
            value += line[i++];
          }
        }
        if (i >= line.size()) {
          ok = false;
          break;
        }
        ++i;  // closing quote
        s.labels.emplace_back(std::move(label), std::move(value));
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size() || line[i] != '}') ok = false;
      ++i;
    }
    if (!ok || i >= line.size() || line[i] != ' ' || !parse_value(line.substr(i + 1), s.value)) {
      out.errors.push_back("bad sample line: " + line);
      continue;
    }
    if (out.groups.empty() || !belongs(out.groups.back(), s.name)) {
      start_group(s.name);  // an untyped group of its own
    }
    out.groups.back().samples.push_back(std::move(s));
  }
  return out;
}

// Returns the series identity: name and labels sorted by name, optionally without one label.
std::string series_key(const sample& s, std::string_view skip = {}) {
  auto labels = s.labels;
  std::sort(labels.begin(), labels.end());
  std::string key = s.name;
  for (const auto& [k, v] : labels) {
    if (k != skip) key += "|" + k + "=" + v;
  }
  return key;
}

std::string label_of(const sample& s, std::string_view name) {
  for (const auto& [k, v] : s.labels) {
    if (k == name) return v;
  }
  return "<missing>";
}

// Returns the violations of the invariants promtool does not check.
std::vector<std::string> check_invariants(const exposition& e) {
  std::vector<std::string> errors = e.errors;
  std::set<std::string> series;
  for (const group& g : e.groups) {
    if (g.help_lines != 1 || g.type_lines != 1) errors.push_back("HELP/TYPE not once: " + g.name);
    if (g.samples.empty()) errors.push_back("group without samples: " + g.name);
    for (const sample& s : g.samples) {
      if (!series.insert(series_key(s)).second) errors.push_back("duplicate: " + series_key(s));
    }
    if (g.type != "histogram" && g.type != "summary") continue;
    // Per child (labels without le/quantile): buckets, _sum, _count.
    struct child {
      std::vector<std::pair<double, double>> buckets;  // (le, cumulative count) in output order
      std::vector<double> quantiles;
      int sums = 0;
      int counts = 0;
      double count = -1;
    };
    std::map<std::string, child> children;
    const std::string extra = g.type == "histogram" ? "le" : "quantile";
    for (const sample& s : g.samples) {
      sample base = s;
      base.name = g.name;
      child& c = children[series_key(base, extra)];
      if (s.name == g.name + "_bucket") {
        double le = 0;
        if (!parse_value(label_of(s, "le"), le)) errors.push_back("bad le: " + series_key(s));
        c.buckets.emplace_back(le, s.value);
      } else if (s.name == g.name) {
        double q = 0;
        if (!parse_value(label_of(s, "quantile"), q) || q < 0 || q > 1) {
          errors.push_back("bad quantile: " + series_key(s));
        }
        c.quantiles.push_back(q);
      } else if (s.name == g.name + "_sum") {
        ++c.sums;
      } else if (s.name == g.name + "_count") {
        ++c.counts;
        c.count = s.value;
      }
    }
    for (const auto& [key, c] : children) {
      if (c.sums != 1 || c.counts != 1) errors.push_back("_sum/_count not once: " + key);
      if (!std::is_sorted(c.quantiles.begin(), c.quantiles.end())) {
        errors.push_back("quantiles unsorted: " + key);
      }
      if (g.type != "histogram") continue;
      if (c.buckets.empty() || !std::isinf(c.buckets.back().first)) {
        errors.push_back("no +Inf bucket: " + key);
        continue;
      }
      for (std::size_t i = 1; i < c.buckets.size(); ++i) {
        if (!(c.buckets[i - 1].first < c.buckets[i].first)) errors.push_back("unsorted le: " + key);
        if (c.buckets[i - 1].second > c.buckets[i].second) {
          errors.push_back("not cumulative: " + key);
        }
      }
      if (c.buckets.back().second != c.count) errors.push_back("+Inf != _count: " + key);
    }
  }
  return errors;
}

// The label values a registry must escape and a parser must read back unchanged.
const std::vector<std::string> tricky_values{"plain",
                                             "back\\slash",
                                             "double \"quote\"",
                                             "line\nfeed",
                                             "all \\\" \n\\n",
                                             "",
                                             "{}=,",
                                             "unicode: \xc3\xa9\xe2\x82\xac",
                                             "trailing\\"};

// A registry with every metric type, labelled and not, each escaping case, and collectors.
void fill(m::registry& r) {
  auto requests =
      r.add_counter_family("http_requests_total", "Requests served.", {"method", "path"});
  auto errors = r.add_counter("errors_total", "Errors with a \\ backslash and a\nline feed.");
  auto depth = r.add_gauge_family("queue_depth", "Jobs waiting.", {"queue"});
  auto temp = r.add_gauge("temperature_celsius", "Temperature.");
  auto sizes = r.add_histogram_family("response_size_bytes", "Sizes.", {"path"},
                                      m::histogram::exponential_bounds(64, 4, 6));
  auto rpc =
      r.add_histogram("rpc_duration_seconds", "RPC latency.", m::histogram::default_bounds());
  auto lat =
      r.add_latency_histogram_family("db_query_duration_seconds", "Query latency.", {"table"});
  auto wait = r.add_latency_histogram("pool_wait_seconds", "Pool wait.");
  auto unused = r.add_counter_family("unused_total", "A family without children.", {"x"});
  REQUIRE(requests.ok());
  REQUIRE(errors.ok());
  REQUIRE(depth.ok());
  REQUIRE(temp.ok());
  REQUIRE(sizes.ok());
  REQUIRE(rpc.ok());
  REQUIRE(lat.ok());
  REQUIRE(wait.ok());
  REQUIRE(unused.ok());

  std::mt19937_64 rng(42);
  std::exponential_distribution<double> seconds(20.0);
  for (const auto& v : tricky_values) {
    (*requests)->with({"GET", v}).inc(3);
    (*depth)->with({v}).set(-2.5);
    for (int i = 0; i < 50; ++i) {
      (*sizes)->with({v}).observe(seconds(rng) * 10000);
      (*lat)->with({v}).observe(std::chrono::duration<double>(seconds(rng)));
    }
  }
  (*errors)->inc();
  (*temp)->set(21.5);
  for (int i = 0; i < 200; ++i) (*rpc)->observe(seconds(rng));
  // The wait histogram stays empty: its quantiles render as NaN.
  r.add_collector([](m::sample_sink& sink) {
     sink.gauge("breaker_state", "Breaker state (1 for the current one).", 1,
                {{"breaker", "payments \"eu\""}, {"state", "closed"}});
     sink.gauge("breaker_state", "Breaker state (1 for the current one).", 0,
                {{"breaker", "payments \"eu\""}, {"state", "open"}});
     sink.counter("cache_hits_total", "Cache hits.", 1234, {{"cache", "line\nfeed"}});
   }).release();
  r.add_collector(m::process_collector{}).release();
}

}  // namespace

TEST_CASE("metrics_exposition: a small registry renders byte for byte", "[metrics]") {
  m::registry r;
  auto requests =
      r.add_counter_family("http_requests_total", "Requests served.", {"method", "code"});
  auto rpc = r.add_histogram("rpc_seconds", "RPC latency.", std::vector<double>{0.25, 1});
  auto temp = r.add_gauge_family("temperature_celsius", "Help with \\ and \n.", {"room"});
  REQUIRE(requests.ok());
  REQUIRE(rpc.ok());
  REQUIRE(temp.ok());
  (*requests)->with({"POST", "500"}).inc();
  (*requests)->with({"GET", "200"}).inc(3);
  for (const double v : {0.25, 0.5, 2.0}) (*rpc)->observe(v);
  (*temp)->with({"a \"b\" \\ c\nd"}).set(-1.5);
  auto reg = r.add_collector([](m::sample_sink& sink) { sink.gauge("queue_depth", "Depth.", 7); });

  const std::string expected =
      "# HELP http_requests_total Requests served.\n"
      "# TYPE http_requests_total counter\n"
      "http_requests_total{method=\"GET\",code=\"200\"} 3\n"
      "http_requests_total{method=\"POST\",code=\"500\"} 1\n"
      "# HELP queue_depth Depth.\n"
      "# TYPE queue_depth gauge\n"
      "queue_depth 7\n"
      "# HELP rpc_seconds RPC latency.\n"
      "# TYPE rpc_seconds histogram\n"
      "rpc_seconds_bucket{le=\"0.25\"} 1\n"
      "rpc_seconds_bucket{le=\"1\"} 2\n"
      "rpc_seconds_bucket{le=\"+Inf\"} 3\n"
      "rpc_seconds_sum 2.75\n"
      "rpc_seconds_count 3\n"
      "# HELP temperature_celsius Help with \\\\ and \\n.\n"
      "# TYPE temperature_celsius gauge\n"
      "temperature_celsius{room=\"a \\\"b\\\" \\\\ c\\nd\"} -1.5\n";
  CHECK(r.render() == expected);

  // The other two outputs carry the same bytes.
  std::string appended = "prefix\n";
  r.render_to(appended);
  CHECK(appended == "prefix\n" + expected);
  std::string written;
  int pieces = 0;
  r.render_to([&](std::string_view piece) {
    written += piece;
    ++pieces;
  });
  CHECK(written == expected);
  CHECK(pieces == 4);  // one per family
  CHECK(m::registry::content_type == "text/plain; version=0.0.4; charset=utf-8");
}

TEST_CASE("metrics_exposition: latency histograms render as summaries in seconds", "[metrics]") {
  m::registry r;
  auto lat = r.add_latency_histogram("op_seconds", "Op.", {.stripes = 1});
  REQUIRE(lat.ok());
  (*lat)->observe_ns(5);
  (*lat)->observe_ns(20);
  const exposition e = parse(r.render());
  CHECK(check_invariants(e).empty());
  REQUIRE(e.groups.size() == 1);
  const group& g = e.groups[0];
  CHECK(g.type == "summary");
  REQUIRE(g.samples.size() == 6);
  const std::vector<std::string> qs{"0.5", "0.9", "0.99", "0.999"};
  for (std::size_t i = 0; i < qs.size(); ++i) {
    CHECK(label_of(g.samples[i], "quantile") == qs[i]);
  }
  CHECK(g.samples[0].value == 5e-9);   // rank 1 of 2: exact below 2^(bits+1) ns
  CHECK(g.samples[1].value == 20e-9);  // rank 2 of 2
  CHECK(g.samples[4].name == "op_seconds_sum");
  CHECK(std::abs(g.samples[4].value - 25e-9) < 1e-20);
  CHECK(g.samples[5].name == "op_seconds_count");
  CHECK(g.samples[5].value == 2);
}

TEST_CASE("metrics_exposition: a full registry parses back and keeps every invariant",
          "[metrics]") {
  m::registry r;
  fill(r);
  const std::string text = r.render();
  const exposition e = parse(text);
  const auto errors = check_invariants(e);
  for (const auto& err : errors) INFO(err);
  CHECK(errors.empty());

  // Sorted by name, one group per name, the empty family left out.
  std::vector<std::string> names;
  for (const group& g : e.groups) names.push_back(g.name);
  CHECK(std::is_sorted(names.begin(), names.end()));
  CHECK(std::find(names.begin(), names.end(), "unused_total") == names.end());
  for (const char* expected :
       {"http_requests_total", "errors_total", "queue_depth", "temperature_celsius",
        "response_size_bytes", "rpc_duration_seconds", "db_query_duration_seconds",
        "pool_wait_seconds", "breaker_state", "cache_hits_total", "process_cpu_seconds_total",
        "process_resident_memory_bytes", "process_virtual_memory_bytes", "process_open_fds",
        "process_max_fds", "process_start_time_seconds", "process_threads"}) {
    INFO(expected);
    CHECK(std::find(names.begin(), names.end(), expected) != names.end());
  }

  // Every escaped label value reads back as written.
  std::set<std::string> read_back;
  for (const group& g : e.groups) {
    if (g.name != "http_requests_total") continue;
    for (const sample& s : g.samples) read_back.insert(label_of(s, "path"));
  }
  CHECK(read_back == std::set<std::string>(tricky_values.begin(), tricky_values.end()));
  for (const group& g : e.groups) {
    if (g.name == "cache_hits_total") CHECK(label_of(g.samples.at(0), "cache") == "line\nfeed");
    if (g.name == "errors_total") {
      CHECK(g.help == "Errors with a \\\\ backslash and a\\nline feed.");  // escaped on the wire
    }
  }
}

TEST_CASE("metrics_exposition: the invariant checker catches broken output", "[metrics]") {
  const std::string header = "# HELP h H.\n# TYPE h histogram\n";
  const std::string good =
      header + "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
  CHECK(check_invariants(parse(good)).empty());
  const std::vector<std::string> broken{
      header + "h_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
      header +
          "h_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\n"
          "h_count 2\n",
      header + "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 5\n",
      header + "h_bucket{le=\"1\"} 1\nh_sum 3\nh_count 1\n",
      "# HELP c C.\n# TYPE c counter\nc 1\nc 2\n",
      "# HELP c C.\n# TYPE c counter\nc 1\n# HELP d D.\n# TYPE d gauge\nd 1\nc{a=\"b\"} 1\n",
      "# HELP c C.\n# HELP c C.\n# TYPE c counter\nc 1\n",
      "# HELP c C.\n# TYPE c counter\nc{a=\"b} 1\n",
  };
  for (const auto& text : broken) {
    INFO(text);
    CHECK_FALSE(check_invariants(parse(text)).empty());
  }
}

TEST_CASE("metrics_exposition: promtool accepts a registry with every type and escape",
          "[metrics][promtool]") {
  const char* promtool = "/usr/bin/promtool";
  INFO("promtool (Debian package `prometheus`, installed by scripts/bootstrap.sh) is required");
  REQUIRE(::access(promtool, X_OK) == 0);

  m::registry r;
  fill(r);
  const auto dir = std::filesystem::temp_directory_path();
  const auto input = dir / ("sluice_metrics_" + std::to_string(::getpid()) + ".prom");
  const auto report = dir / ("sluice_metrics_" + std::to_string(::getpid()) + ".out");
  {
    std::ofstream f(input, std::ios::binary);
    f << r.render();
  }
  const std::string command = std::string(promtool) + " check metrics < " + input.string() + " > " +
                              report.string() + " 2>&1";
  const int status = std::system(command.c_str());
  std::ifstream out(report);
  const std::string output((std::istreambuf_iterator<char>(out)), std::istreambuf_iterator<char>());
  INFO("promtool said: " << output);
  REQUIRE(status != -1);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  std::filesystem::remove(input);
  std::filesystem::remove(report);
}
