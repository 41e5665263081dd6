// handlers.cpp: the buffered endpoints (everything but the streaming upload and download), with
// Boost.JSON for bodies. No Beast here: handlers see service::request and fill service::response.
#include <charconv>
#include <cstdint>

#include <boost/json.hpp>

#include "metrics.hpp"
#include "service.hpp"
#include "user_store.hpp"

namespace service {
namespace {

constexpr auto get = static_cast<std::uint8_t>(method::get);
constexpr auto head = static_cast<std::uint8_t>(method::head);
constexpr auto post = static_cast<std::uint8_t>(method::post);

// Bodies of GET requests are read (and ignored) up to this size; larger ones get 413.
constexpr std::size_t kSmallBody = 16 * 1024;

void json_body(response& res, const boost::json::value& v) {
  res.content_type = "application/json";
  res.body = boost::json::serialize(v);
}

// Parses a decimal integer made of digits only (optional leading '-'), without overflow.
bool parse_int(std::string_view text, std::int64_t& out) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

void hello(app&, const request&, response& res) {
  res.content_type = "text/plain";
  res.body.assign("hello\n");
}

void healthz(app&, const request&, response& res) {
  res.content_type = "text/plain";
  res.body.assign("ok\n");
}

void readyz(app& a, const request&, response& res) {
  boost::json::object o;
  o["store"] = a.users->kind();
  if (a.draining.load(std::memory_order_relaxed)) {
    o["ready"] = false;
    o["reason"] = "draining";
    res.status = 503;
  } else if (absl::Status s = a.users->ping(); !s.ok()) {
    o["ready"] = false;
    o["reason"] = "store unavailable: " + std::string(s.message());
    res.status = 503;
    res.set("Retry-After", "1");
  } else {
    o["ready"] = true;
    o["threads"] = a.cfg.threads;
  }
  json_body(res, o);
}

void users_by_id(app& a, const request& req, response& res) {
  std::int64_t id = 0;
  if (!parse_int(req.param("id"), id) || id <= 0) return res.error(400, "invalid id");
  absl::StatusOr<std::optional<user>> found = a.users->get(id);
  if (!found.ok()) {
    res.set("Retry-After", "1");
    return res.error(503, "user store unavailable");
  }
  if (!found->has_value()) return res.error(404, "user not found");
  const user& u = **found;
  json_body(res, boost::json::object{{"id", u.id}, {"name", u.name}, {"email", u.email}});
}

// Builds page `page` of the catalogue: 100 items with deterministic titles and scores.
std::string build_page(std::int64_t page) {
  boost::json::array items;
  items.reserve(100);
  for (std::int64_t i = 0; i < 100; ++i) {
    std::int64_t id = page * 100 + i;
    auto x = static_cast<std::uint64_t>(id) * 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    items.push_back(boost::json::object{
        {"id", id}, {"title", "item " + std::to_string(id)}, {"score", x % 1000}});
  }
  return boost::json::serialize(boost::json::object{{"page", page}, {"items", std::move(items)}});
}

void api_data(app&, const request& req, response& res) {
  std::string_view text;
  std::int64_t page = 0;
  if (req.query_param("page", text) && (!parse_int(text, page) || page < 0 || page > 1'000'000)) {
    return res.error(400, "page must be an integer in [0, 1000000]");
  }
  res.body = build_page(page);
}

void metrics(app& a, const request&, response& res) {
  res.content_type = metrics_content_type;
  res.body = a.metrics->render();
}

}  // namespace

void register_routes(app& a) {
  router& r = a.routes;
  r.add("/hello", get | head, route_kind::buffered, hello, kSmallBody);
  r.add("/healthz", get | head, route_kind::buffered, healthz, kSmallBody);
  r.add("/readyz", get | head, route_kind::buffered, readyz, kSmallBody);
  r.add("/users/:id", get | head, route_kind::buffered, users_by_id, kSmallBody);
  r.add("/api/data", get | head, route_kind::buffered, api_data, kSmallBody);
  r.add("/metrics", get | head, route_kind::buffered, metrics, kSmallBody);
  r.add("/download/:name", get | head, route_kind::download, nullptr);
  r.add("/upload", post, route_kind::upload, nullptr);
}

}  // namespace service
