// sluice/metrics/registry.hpp
//
// `sluice::metrics::registry` names metrics, validates their names and renders them in the
// Prometheus text exposition format 0.0.4, for a /metrics endpoint (sluice brings no HTTP server:
// serve `registry.render()` from yours with `registry::content_type`).
//
// Two ways to publish a figure:
//   - push: create a `counter`, `gauge`, `histogram` or `latency_histogram` (optionally a family
//     of them keyed by label values) and update it on your hot path; updates are lock-free.
//   - pull: `add_collector(callback)`; at scrape time the callback reads whatever state it likes
//     (a primitive's `stats()`, /proc) and emits counter and gauge samples into a `sample_sink`.
//     Nothing runs between scrapes, so an object without a collector attached pays nothing.
//
// Names: a metric name must match [a-zA-Z_:][a-zA-Z0-9_:]*, a label name [a-zA-Z_][a-zA-Z0-9_]*
// without a leading "__"; `le` is reserved in histograms and `quantile` in latency histograms
// (rendered as summaries). Registering the same name again with the same type, help, labels and
// buckets returns the metric already registered; anything else that reuses a name, or collides with
// the `_bucket`/`_sum`/`_count` series of a histogram or summary, is AlreadyExists.
//
// Output: families sorted by name, each with one HELP and one TYPE line followed by all its
// series, children sorted by label values; a family without children is omitted. Label values are
// escaped (backslash, double quote, line feed); histogram buckets are cumulative and end with
// `le="+Inf"`, equal to `_count`.
//
// Thread safety: all member functions may be called concurrently. Creating a metric or a
// labelled child takes a lock and allocates; updating a metric never does (updates are not
// async-signal-safe, though: see <sluice/detail/metrics_cells.hpp>). Scrapes are serialised
// with one another. A collector must not call `render*` or destroy a registration of the same
// registry (it would deadlock); it may create metrics.
// Lifetime: metrics and families live as long as the registry; the pointers stay valid until it
// is destroyed. A `collector_registration` may outlive its registry (it then does nothing).
// Errors: factories return InvalidArgument (bad name, labels, buckets or options) or
// AlreadyExists (conflicting registration). Collectors' samples with a bad or conflicting name, or
// a duplicate series, are dropped and counted in `sample_sink::dropped()`.
//
// Example:
//   sluice::metrics::registry registry;
//   auto requests = registry.add_counter_family("http_requests_total", "Requests served.",
//                                               {"method", "code"});
//   if (!requests.ok()) return requests.status();
//   sluice::metrics::counter& get_ok = (*requests)->with({"GET", "200"});  // keep the reference
//   get_ok.inc();                                                           // lock-free
//   auto process = registry.add_collector(sluice::metrics::process_collector{});
//   std::string body = registry.render();
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/detail/metrics_text.hpp"
#include "sluice/detail/mutex.hpp"
#include "sluice/metrics/counter.hpp"
#include "sluice/metrics/gauge.hpp"
#include "sluice/metrics/histogram.hpp"
#include "sluice/metrics/latency_histogram.hpp"

namespace sluice::metrics {

// The Prometheus type a family is rendered as (`latency_histogram` renders as `summary`).
enum class metric_type { counter, gauge, histogram, summary };

// Returns the TYPE-line spelling of `t`.
constexpr std::string_view to_string(metric_type t) noexcept {
  switch (t) {
    case metric_type::counter:
      return "counter";
    case metric_type::gauge:
      return "gauge";
    case metric_type::histogram:
      return "histogram";
    case metric_type::summary:
      return "summary";
  }
  return "untyped";
}

}  // namespace sluice::metrics

namespace sluice::detail {

// Internal; the type-erased part of a family that the registry keeps and renders.
class metric_family_base {
 public:
  metric_family_base(std::string name, std::string help, metrics::metric_type type,
                     std::vector<std::string> label_names, std::string signature)
      : name_(std::move(name)),
        help_(std::move(help)),
        type_(type),
        label_names_(std::move(label_names)),
        signature_(std::move(signature)) {}
  virtual ~metric_family_base() = default;
  metric_family_base(const metric_family_base&) = delete;
  metric_family_base& operator=(const metric_family_base&) = delete;

  // Returns the metric name.
  const std::string& name() const noexcept { return name_; }
  // Returns the help text.
  const std::string& help() const noexcept { return help_; }
  // Returns the Prometheus type.
  metrics::metric_type type() const noexcept { return type_; }
  // Returns the label names, in the order `with()` takes values.
  const std::vector<std::string>& label_names() const noexcept { return label_names_; }
  // Returns what makes two registrations the same metric (type, help, labels, buckets).
  const std::string& signature() const noexcept { return signature_; }

  // Appends the family (HELP, TYPE and every child's series); nothing if it has no child.
  virtual void render(std::string& out) const = 0;

 protected:
  // Appends `a="x",b="y"` for the label values of one child (no braces).
  void append_label_body(std::string& out, const std::vector<std::string>& values) const {
    for (std::size_t i = 0; i < label_names_.size(); ++i) {
      if (i > 0) out += ',';
      out += label_names_[i];
      out += "=\"";
      append_label_value(out, values[i]);
      out += '"';
    }
  }

 private:
  std::string name_;
  std::string help_;
  metrics::metric_type type_;
  std::vector<std::string> label_names_;
  std::string signature_;
};

// Appends one series line: name+suffix, the labels `body` plus an optional extra label, a value.
inline void append_series_start(std::string& out, std::string_view name, std::string_view suffix,
                                std::string_view body, std::string_view extra_name = {},
                                std::string_view extra_value = {}) {
  out += name;
  out += suffix;
  if (!body.empty() || !extra_name.empty()) {
    out += '{';
    out += body;
    if (!extra_name.empty()) {
      if (!body.empty()) out += ',';
      out += extra_name;
      out += "=\"";
      out += extra_value;  // Only `le` and `quantile` numbers: nothing to escape.
      out += '"';
    }
    out += '}';
  }
  out += ' ';
}

class collector_table;

}  // namespace sluice::detail

namespace sluice::metrics {

// A set of metrics of one kind sharing a name, help text and label names, one child per distinct
// combination of label values (Prometheus' "metric family").
//
// Thread safety: all member functions may be called concurrently. `with()` takes the family's
// lock and may allocate; keep the returned reference for the hot path.
template <class Metric>
class family final : public detail::metric_family_base {
 public:
  // Internal: the registry creates families.
  family(std::string name, std::string help, metric_type type, std::vector<std::string> labels,
         std::string signature, std::function<std::unique_ptr<Metric>()> make)
      : metric_family_base(std::move(name), std::move(help), type, std::move(labels),
                           std::move(signature)),
        make_(std::move(make)) {}

  // Returns the child for these label values, creating it on first use. Takes the family lock;
  // allocates when creating. The reference stays valid as long as the registry. Precondition: as
  // many values as label names; in release builds missing values are empty and extra ones ignored.
  Metric& with(std::initializer_list<std::string_view> values) {
    return with_key(make_key(values.begin(), values.size()));
  }

  // As above, with the values in a container.
  Metric& with(std::span<const std::string> values) {
    return with_key(make_key(values.data(), values.size()));
  }

  // Returns the number of children.
  std::size_t size() const {
    detail::mutex_lock lock(mu_);
    return children_.size();
  }

  // Calls `f(label_values, metric)` for every child, sorted by label values, under the family
  // lock (`f` must not call `with()` on this family).
  template <class F>
  void for_each(F&& f) const {
    detail::mutex_lock lock(mu_);
    for (const auto& [values, child] : children_) f(values, static_cast<const Metric&>(*child));
  }

  // Internal: appends this family in the text format.
  void render(std::string& out) const override {
    detail::mutex_lock lock(mu_);
    if (children_.empty()) return;
    detail::append_family_header(out, name(), help(), to_string(type()));
    std::string body;
    for (const auto& [values, child] : children_) {
      body.clear();
      append_label_body(body, values);
      render_child(out, body, *child);
    }
  }

 private:
  template <class T>
  std::vector<std::string> make_key(const T* values, std::size_t n) const {
    assert(n == label_names().size() && "family::with: one value per label name");
    std::vector<std::string> key(label_names().size());
    for (std::size_t i = 0; i < key.size() && i < n; ++i) key[i] = std::string(values[i]);
    return key;
  }

  Metric& with_key(std::vector<std::string> key) {
    detail::mutex_lock lock(mu_);
    auto it = children_.find(key);
    if (it == children_.end()) it = children_.emplace(std::move(key), make_()).first;
    return *it->second;
  }

  void render_child(std::string& out, const std::string& body, const Metric& m) const {
    if constexpr (std::is_same_v<Metric, counter>) {
      detail::append_series_start(out, name(), "", body);
      detail::append_uint(out, m.value());
      out += '\n';
    } else if constexpr (std::is_same_v<Metric, gauge>) {
      detail::append_series_start(out, name(), "", body);
      detail::append_double(out, m.value());
      out += '\n';
    } else if constexpr (std::is_same_v<Metric, histogram>) {
      const histogram::snapshot s = m.read();
      std::uint64_t cumulative = 0;
      std::string le;
      for (std::size_t i = 0; i < s.counts.size(); ++i) {
        cumulative += s.counts[i];
        le.clear();
        if (i < s.bounds.size()) {
          detail::append_double(le, s.bounds[i]);
        } else {
          le = "+Inf";
        }
        detail::append_series_start(out, name(), "_bucket", body, "le", le);
        detail::append_uint(out, cumulative);
        out += '\n';
      }
      detail::append_series_start(out, name(), "_sum", body);
      detail::append_double(out, s.sum);
      out += "\n";
      detail::append_series_start(out, name(), "_count", body);
      detail::append_uint(out, s.count);
      out += '\n';
    } else {
      static_assert(std::is_same_v<Metric, latency_histogram>);
      const latency_histogram::snapshot s = m.read();
      std::string q;
      for (const double quantile : {0.5, 0.9, 0.99, 0.999}) {
        q.clear();
        detail::append_double(q, quantile);
        detail::append_series_start(out, name(), "", body, "quantile", q);
        detail::append_double(out, s.quantile(quantile));
        out += '\n';
      }
      detail::append_series_start(out, name(), "_sum", body);
      detail::append_double(out, s.sum_seconds());
      out += '\n';
      detail::append_series_start(out, name(), "_count", body);
      detail::append_uint(out, s.count);
      out += '\n';
    }
  }

  std::function<std::unique_ptr<Metric>()> make_;
  mutable detail::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Metric>> children_ ABSL_GUARDED_BY(mu_);
};

using counter_family = family<counter>;
using gauge_family = family<gauge>;
using histogram_family = family<histogram>;
using latency_histogram_family = family<latency_histogram>;

// Where a collector emits its samples during a scrape. Samples are grouped by metric name; the
// registry renders them with the registered families, sorted by name.
//
// Thread safety: a sink is used by one collector call at a time; not thread-safe.
class sample_sink {
 public:
  // A label: name and value (the value is escaped on output).
  using label = std::pair<std::string_view, std::string_view>;

  sample_sink() = default;

  // Emits a counter sample (`value` should only grow between scrapes; by convention the name ends
  // in `_total`). Dropped (and counted) if the name or a label name is invalid, the name was
  // emitted with another type, or this series was already emitted.
  void counter(std::string_view name, std::string_view help, double value,
               std::initializer_list<label> labels = {}) {
    add(metric_type::counter, name, help, value,
        std::span<const label>(labels.begin(), labels.size()));
  }
  // As above, with the labels in a container.
  void counter(std::string_view name, std::string_view help, double value,
               std::span<const label> labels) {
    add(metric_type::counter, name, help, value, labels);
  }

  // Emits a gauge sample; dropped under the same conditions as `counter`.
  void gauge(std::string_view name, std::string_view help, double value,
             std::initializer_list<label> labels = {}) {
    add(metric_type::gauge, name, help, value,
        std::span<const label>(labels.begin(), labels.size()));
  }
  // As above, with the labels in a container.
  void gauge(std::string_view name, std::string_view help, double value,
             std::span<const label> labels) {
    add(metric_type::gauge, name, help, value, labels);
  }

  // Returns the number of samples dropped so far.
  std::size_t dropped() const noexcept { return dropped_; }

 private:
  friend class registry;

  struct collected_family {
    metric_type type;
    std::string help;
    std::map<std::string, double> series;  // Rendered `{labels}` (or "") -> value.
  };

  void add(metric_type type, std::string_view name, std::string_view help, double value,
           std::span<const label> labels) {
    if (!detail::is_valid_metric_name(name)) {
      ++dropped_;
      return;
    }
    std::string key;
    if (!labels.empty()) {
      detail::label_writer writer(key);
      for (std::size_t i = 0; i < labels.size(); ++i) {
        const auto& [label_name, label_value] = labels[i];
        bool repeated = false;
        for (std::size_t j = 0; j < i; ++j) repeated |= labels[j].first == label_name;
        if (!detail::is_valid_label_name(label_name) || repeated) {
          ++dropped_;
          return;
        }
        writer.add(label_name, label_value);
      }
      writer.close();
    }
    auto it = families_.find(name);
    if (it == families_.end()) {
      it =
          families_.emplace(std::string(name), collected_family{type, std::string(help), {}}).first;
    } else if (it->second.type != type) {
      ++dropped_;
      return;
    }
    if (!it->second.series.emplace(std::move(key), value).second) ++dropped_;
  }

  std::map<std::string, collected_family, std::less<>> families_;
  std::size_t dropped_ = 0;
};

// Keeps a collector registered; destroying (or `reset()`ting) it unregisters the collector. Hold
// it next to the object the collector reads, and destroy it before that object.
//
// Thread safety: one registration object must not be used concurrently; different ones may.
class collector_registration {
 public:
  // Creates an empty registration (registers nothing).
  collector_registration() = default;
  collector_registration(collector_registration&& other) noexcept
      : table_(std::move(other.table_)), id_(std::exchange(other.id_, 0)) {}
  collector_registration& operator=(collector_registration&& other) noexcept {
    if (this != &other) {
      reset();
      table_ = std::move(other.table_);
      id_ = std::exchange(other.id_, 0);
    }
    return *this;
  }
  collector_registration(const collector_registration&) = delete;
  collector_registration& operator=(const collector_registration&) = delete;
  ~collector_registration() { reset(); }

  // Unregisters the collector. Blocks while a scrape is running, so once it returns the collector
  // is not running and never will be again: the state it reads may be destroyed. Must not be
  // called from inside a collector of the same registry.
  inline void reset();

  // Leaves the collector registered for the rest of the registry's life and empties this handle.
  void release() noexcept {
    table_.reset();
    id_ = 0;
  }

  // Returns whether this handle still holds a registration.
  bool active() const noexcept { return id_ != 0 && !table_.expired(); }

 private:
  friend class registry;
  collector_registration(std::weak_ptr<detail::collector_table> table, std::uint64_t id)
      : table_(std::move(table)), id_(id) {}

  std::weak_ptr<detail::collector_table> table_;
  std::uint64_t id_ = 0;
};

}  // namespace sluice::metrics

namespace sluice::detail {

// Internal: the collectors of one registry, shared with its registrations (which may outlive it).
class collector_table {
 public:
  using collect_fn = std::function<void(metrics::sample_sink&)>;

  // Adds a collector and returns its id (never 0).
  std::uint64_t add(collect_fn fn) ABSL_LOCKS_EXCLUDED(mu_) {
    auto shared = std::make_shared<const collect_fn>(std::move(fn));
    mutex_lock lock(mu_);
    const std::uint64_t id = ++last_id_;
    collectors_.emplace(id, std::move(shared));
    return id;
  }

  // Removes a collector, waiting for a running scrape to finish first.
  void remove(std::uint64_t id) ABSL_LOCKS_EXCLUDED(scrape_mu_, mu_) {
    mutex_lock scrape(scrape_mu_);
    mutex_lock lock(mu_);
    collectors_.erase(id);
  }

  // Runs every collector into `sink`. The caller holds `scrape_mu()`.
  void collect(metrics::sample_sink& sink) ABSL_EXCLUSIVE_LOCKS_REQUIRED(scrape_mu_)
      ABSL_LOCKS_EXCLUDED(mu_) {
    std::vector<std::shared_ptr<const collect_fn>> fns;
    {
      mutex_lock lock(mu_);
      fns.reserve(collectors_.size());
      for (const auto& [id, fn] : collectors_) fns.push_back(fn);
    }
    // Outside mu_: a collector may register metrics or collectors. Removal waits on scrape_mu_.
    for (const auto& fn : fns) (*fn)(sink);
  }

  // Returns the mutex a scrape holds while collectors run.
  mutex& scrape_mu() ABSL_LOCK_RETURNED(scrape_mu_) { return scrape_mu_; }

 private:
  mutex scrape_mu_;  // Serialises scrapes and removals.
  mutex mu_ ABSL_ACQUIRED_AFTER(scrape_mu_);
  std::uint64_t last_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::uint64_t, std::shared_ptr<const collect_fn>> collectors_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::detail

namespace sluice::metrics {

inline void collector_registration::reset() {
  if (id_ != 0) {
    if (auto table = table_.lock()) table->remove(id_);
  }
  table_.reset();
  id_ = 0;
}

class registry {
 public:
  struct options {
    // Exclusive rows of each counter, histogram and latency histogram (1..64). 0 picks
    // detail::metrics_default_stripes() (2x hardware threads, at least 8): one per thread that
    // updates metrics, in most applications. Lower it to save memory with many children.
    std::size_t stripes = 0;
  };

  // The Content-Type header for `render()`'s output.
  static constexpr std::string_view content_type = "text/plain; version=0.0.4; charset=utf-8";

  // Creates an empty registry.
  registry() : registry(options{}) {}
  // Creates an empty registry with `opts`.
  explicit registry(const options& opts)
      : opts_(opts), collectors_(std::make_shared<detail::collector_table>()) {}

  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  // Registers (or finds) an unlabelled counter. Takes the registry lock; allocates.
  absl::StatusOr<counter*> add_counter(std::string_view name, std::string_view help) {
    return only_child(add_counter_family(name, help, {}));
  }
  // Registers (or finds) a family of counters with these label names.
  absl::StatusOr<counter_family*> add_counter_family(std::string_view name, std::string_view help,
                                                     std::vector<std::string> label_names) {
    const std::size_t stripes = opts_.stripes;
    return add_family<counter>(metric_type::counter, name, help, std::move(label_names), "",
                               [stripes] { return std::make_unique<counter>(stripes); });
  }

  // Registers (or finds) an unlabelled gauge.
  absl::StatusOr<gauge*> add_gauge(std::string_view name, std::string_view help) {
    return only_child(add_gauge_family(name, help, {}));
  }
  // Registers (or finds) a family of gauges with these label names.
  absl::StatusOr<gauge_family*> add_gauge_family(std::string_view name, std::string_view help,
                                                 std::vector<std::string> label_names) {
    return add_family<gauge>(metric_type::gauge, name, help, std::move(label_names), "",
                             [] { return std::make_unique<gauge>(); });
  }

  // Registers (or finds) an unlabelled histogram with these upper bounds (see
  // histogram::validate_bounds; InvalidArgument when unusable).
  absl::StatusOr<histogram*> add_histogram(std::string_view name, std::string_view help,
                                           std::span<const double> bounds) {
    return only_child(add_histogram_family(name, help, {}, bounds));
  }
  // Registers (or finds) a family of histograms; `le` may not be a label name.
  absl::StatusOr<histogram_family*> add_histogram_family(std::string_view name,
                                                         std::string_view help,
                                                         std::vector<std::string> label_names,
                                                         std::span<const double> bounds) {
    if (absl::Status s = histogram::validate_bounds(bounds); !s.ok()) return s;
    std::vector<double> copy(bounds.begin(), bounds.end());
    std::string shape;
    for (const double b : copy) {
      detail::append_double(shape, b);
      shape += ' ';
    }
    const std::size_t stripes = opts_.stripes;
    return add_family<histogram>(
        metric_type::histogram, name, help, std::move(label_names), shape,
        [copy = std::move(copy), stripes] { return std::make_unique<histogram>(copy, stripes); });
  }

  // Registers (or finds) an unlabelled latency histogram (rendered as a summary in seconds;
  // name it `..._seconds`).
  absl::StatusOr<latency_histogram*> add_latency_histogram(
      std::string_view name, std::string_view help, const latency_histogram::options& opts = {}) {
    return only_child(add_latency_histogram_family(name, help, {}, opts));
  }
  // Registers (or finds) a family of latency histograms; `quantile` may not be a label name.
  absl::StatusOr<latency_histogram_family*> add_latency_histogram_family(
      std::string_view name, std::string_view help, std::vector<std::string> label_names,
      const latency_histogram::options& opts = {}) {
    if (absl::Status s = latency_histogram::validate(opts); !s.ok()) return s;
    latency_histogram::options o = opts;
    if (o.stripes == 0) o.stripes = opts_.stripes;
    const std::string shape =
        std::to_string(o.precision_bits) + " " + std::to_string(o.max.count());
    return add_family<latency_histogram>(metric_type::summary, name, help, std::move(label_names),
                                         shape,
                                         [o] { return std::make_unique<latency_histogram>(o); });
  }

  // Registers `collect`, called on every scrape (serialised with other scrapes) to emit samples
  // into a sink. Keep the returned registration while the state `collect` reads is alive.
  [[nodiscard]] collector_registration add_collector(std::function<void(sample_sink&)> collect) {
    return collector_registration(collectors_, collectors_->add(std::move(collect)));
  }

  // Returns the exposition text of every family and collector. Allocates; O(total series).
  std::string render() const {
    std::string out;
    render_to(out);
    return out;
  }

  // Appends the exposition text to `out`.
  void render_to(std::string& out) const {
    render_impl(out, [](std::string&) {});
  }

  // Passes the exposition text to `write` in pieces (one family at a time), in order.
  void render_to(absl::FunctionRef<void(std::string_view)> write) const {
    std::string buf;
    render_impl(buf, [&write](std::string& chunk) {
      if (chunk.empty()) return;
      write(std::string_view(chunk));
      chunk.clear();
    });
  }

 private:
  template <class Metric>
  static absl::StatusOr<Metric*> only_child(absl::StatusOr<family<Metric>*> f) {
    if (!f.ok()) return f.status();
    return &(*f)->with({});
  }

  // Returns the series names a family of this type and name renders.
  static std::vector<std::string> claimed_names(metric_type type, const std::string& name) {
    switch (type) {
      case metric_type::histogram:
        return {name, name + "_bucket", name + "_sum", name + "_count"};
      case metric_type::summary:
        return {name, name + "_sum", name + "_count"};
      default:
        return {name};
    }
  }

  template <class Metric>
  absl::StatusOr<family<Metric>*> add_family(metric_type type, std::string_view name_in,
                                             std::string_view help,
                                             std::vector<std::string> label_names,
                                             const std::string& shape,
                                             std::function<std::unique_ptr<Metric>()> make) {
    std::string name(name_in);
    if (!detail::is_valid_metric_name(name)) {
      return absl::InvalidArgumentError("invalid metric name \"" + name + "\"");
    }
    for (std::size_t i = 0; i < label_names.size(); ++i) {
      const std::string& l = label_names[i];
      if (!detail::is_valid_label_name(l)) {
        return absl::InvalidArgumentError("metric " + name + ": invalid label name \"" + l + "\"");
      }
      if ((type == metric_type::histogram && l == "le") ||
          (type == metric_type::summary && l == "quantile")) {
        return absl::InvalidArgumentError("metric " + name + ": label name \"" + l +
                                          "\" is reserved for its type");
      }
      if (std::find(label_names.begin(), label_names.begin() + static_cast<std::ptrdiff_t>(i), l) !=
          label_names.begin() + static_cast<std::ptrdiff_t>(i)) {
        return absl::InvalidArgumentError("metric " + name + ": label \"" + l + "\" repeated");
      }
    }
    std::string signature(to_string(type));
    signature += '\n';
    signature += help;
    signature += '\n';
    for (const auto& l : label_names) {
      signature += l;
      signature += ',';
    }
    signature += '\n';
    signature += shape;

    detail::mutex_lock lock(mu_);
    if (auto it = families_.find(name); it != families_.end()) {
      if (it->second->signature() == signature) {
        return static_cast<family<Metric>*>(it->second.get());
      }
      return absl::AlreadyExistsError("metric " + name +
                                      " is already registered with another type, help, labels or "
                                      "buckets");
    }
    const std::vector<std::string> claims = claimed_names(type, name);
    for (const auto& c : claims) {
      if (auto it = claimed_.find(c); it != claimed_.end()) {
        return absl::AlreadyExistsError("metric " + name + ": series name " + c +
                                        " collides with metric " + it->second);
      }
    }
    auto owned =
        std::make_unique<family<Metric>>(name, std::string(help), type, std::move(label_names),
                                         std::move(signature), std::move(make));
    family<Metric>* raw = owned.get();
    for (const auto& c : claims) claimed_.emplace(c, name);
    families_.emplace(std::move(name), std::move(owned));
    return raw;
  }

  void render_impl(std::string& out, absl::FunctionRef<void(std::string&)> flush) const {
    sample_sink sink;
    detail::mutex_lock scrape(collectors_->scrape_mu());
    collectors_->collect(sink);

    // Families are never removed, so the pointers taken under the lock stay valid after it.
    std::vector<const detail::metric_family_base*> registered;
    {
      detail::mutex_lock lock(mu_);
      registered.reserve(families_.size());
      for (const auto& [name, f] : families_) registered.push_back(f.get());
      for (auto it = sink.families_.begin(); it != sink.families_.end();) {
        bool clash = false;
        for (const auto& c : claimed_names(it->second.type, it->first)) {
          clash |= claimed_.contains(c);
        }
        // A collected name that is a registered family's name or series name is dropped.
        it = clash ? sink.families_.erase(it) : std::next(it);
      }
    }

    // Merge the two name-sorted lists.
    auto collected = sink.families_.cbegin();
    auto own = registered.cbegin();
    while (collected != sink.families_.cend() || own != registered.cend()) {
      if (own != registered.cend() &&
          (collected == sink.families_.cend() || (*own)->name() < collected->first)) {
        (*own)->render(out);
        ++own;
      } else {
        const auto& [name, f] = *collected;
        detail::append_family_header(out, name, f.help, to_string(f.type));
        for (const auto& [labels, value] : f.series) {
          out += name;
          out += labels;
          out += ' ';
          detail::append_double(out, value);
          out += '\n';
        }
        ++collected;
      }
      flush(out);
    }
  }

  options opts_;
  std::shared_ptr<detail::collector_table> collectors_;
  mutable detail::mutex mu_;
  // Sorted by name, so rendering needs no sort.
  std::map<std::string, std::unique_ptr<detail::metric_family_base>> families_ ABSL_GUARDED_BY(mu_);
  // Every family name and series name rendered (e.g. x_bucket) -> the family that renders it.
  absl::flat_hash_map<std::string, std::string> claimed_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::metrics
