// sluice/detail/metrics_text.hpp
//
// Internal; not part of the public API. The pieces of the Prometheus text exposition format 0.0.4
// that every metric type needs: name validation, escaping and number formatting, kept in one place
// so the registry and the collectors' sink write byte-identical output.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace sluice::detail {

// Returns whether `name` is a valid metric name: [a-zA-Z_:][a-zA-Z0-9_:]*.
inline bool is_valid_metric_name(std::string_view name) noexcept {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (digit && i > 0))) return false;
  }
  return true;
}

// Returns whether `name` is a valid label name a user may choose: [a-zA-Z_][a-zA-Z0-9_]*, not
// starting with "__" (reserved for Prometheus' internal use).
inline bool is_valid_label_name(std::string_view name) noexcept {
  if (name.empty() || name.substr(0, 2) == "__") return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (digit && i > 0))) return false;
  }
  return true;
}

// Appends `value` escaped for a label value: backslash, double quote and line feed.
inline void append_label_value(std::string& out, std::string_view value) {
  for (const char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
}

// Appends `help` escaped for a HELP line: backslash and line feed.
inline void append_help_text(std::string& out, std::string_view help) {
  for (const char c : help) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
}

// Appends `v` as Prometheus writes floats: "+Inf", "-Inf", "NaN", else the shortest decimal form
// that reads back to the same double.
inline void append_double(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buf[32];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, ec == std::errc{} ? end : buf);
  }
}

// Appends `v` in decimal.
inline void append_uint(std::string& out, std::uint64_t v) {
  char buf[24];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, ec == std::errc{} ? end : buf);
}

// Appends the "# HELP" and "# TYPE" lines of a family.
inline void append_family_header(std::string& out, std::string_view name, std::string_view help,
                                 std::string_view type) {
  out += "# HELP ";
  out += name;
  out += ' ';
  append_help_text(out, help);
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

// Appends `{a="x",b="y"` (without the closing brace) for parallel name/value ranges; nothing when
// both are empty. The caller closes with `close_labels`, possibly after adding more pairs with
// `add_label`, so that an extra `le` or `quantile` label lands inside the same braces.
class label_writer {
 public:
  explicit label_writer(std::string& out) noexcept : out_(out) {}

  // Appends one `name="escaped value"` pair.
  void add(std::string_view name, std::string_view value) {
    out_ += first_ ? '{' : ',';
    first_ = false;
    out_ += name;
    out_ += "=\"";
    append_label_value(out_, value);
    out_ += '"';
  }

  // Closes the braces if any pair was written.
  void close() {
    if (!first_) out_ += '}';
  }

 private:
  std::string& out_;
  bool first_ = true;
};

}  // namespace sluice::detail
