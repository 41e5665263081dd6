// handlers.cpp: the buffered endpoints (everything but the streaming upload and download), with
// Boost.JSON for bodies. No Beast here: handlers see service::request and fill service::response.
// In Redis mode /users/:id and /api/data are coroutine routes (route_kind::async): they co_await
// Redis from their loop.
#include <charconv>
#include <cmath>
#include <cstdint>

#include <boost/json.hpp>

#include <sluice/asio/cache.hpp>

#include "metrics.hpp"
#include "primitives.hpp"
#include "redis_mode.hpp"
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

void cached_body(response& res, const body_ptr& body, const char* how) {
  res.content_type = "application/json";
  res.body = *body;
  res.set("X-Cache", how);
}

// Answers a store's reply for user `id` (404, or the user, cached, X-Cache: MISS).
void answer_found(primitives& p, std::int64_t id, const std::optional<user>& found, response& res) {
  if (!found) return res.error(404, "user not found");
  auto body = std::make_shared<const std::string>(boost::json::serialize(
      boost::json::object{{"id", found->id}, {"name", found->name}, {"email", found->email}}));
  p.users.put(id, body);
  cached_body(res, body, "MISS");
}

// Answers when the store could not: the last known value (STALE), else 503 + Retry-After.
template <class Cached>
void answer_unavailable(const Cached& cached, std::chrono::nanoseconds retry, response& res) {
  if (cached) return cached_body(res, cached->value, "STALE");
  const auto seconds = std::chrono::ceil<std::chrono::seconds>(retry).count();
  res.set("Retry-After", std::to_string(seconds < 1 ? 1 : seconds));
  res.error(503, "user store unavailable");
}

// GET /users/:id: the users cache in front of the store, the store behind a circuit breaker,
// and the last known value (X-Cache: STALE) when the store is down or the breaker is open.
void users_by_id(app& a, const request& req, response& res) {
  std::int64_t id = 0;
  if (!parse_int(req.param("id"), id) || id <= 0) return res.error(400, "invalid id");
  primitives& p = *a.prims;
  auto cached = p.users.get_stale(id);
  if (cached && !cached->stale) return cached_body(res, cached->value, "HIT");

  std::chrono::nanoseconds retry = std::chrono::seconds(1);
  if (auto permit = p.users_breaker.try_acquire()) {
    absl::StatusOr<std::optional<user>> found = a.users->get(id);
    permit->record(found.status());
    if (found.ok()) return answer_found(p, id, *found, res);
  } else if (permit.rejection().retry_after > retry) {
    retry = permit.rejection().retry_after;
  }
  answer_unavailable(cached, retry, res);
}

// GET /users/:id for an asynchronous store (Redis): the same steps, the store read co_awaited.
boost::asio::awaitable<void> users_by_id_async(app& a, const request& req, response& res) {
  std::int64_t id = 0;
  if (!parse_int(req.param("id"), id) || id <= 0) {
    res.error(400, "invalid id");
    co_return;
  }
  primitives& p = *a.prims;
  auto cached = p.users.get_stale(id);
  if (cached && !cached->stale) {
    cached_body(res, cached->value, "HIT");
    co_return;
  }
  std::chrono::nanoseconds retry = std::chrono::seconds(1);
  if (auto permit = p.users_breaker.try_acquire()) {
    absl::StatusOr<std::optional<user>> found = co_await a.users->async_get(id);
    permit->record(found.status());
    if (found.ok()) {
      answer_found(p, id, *found, res);
      co_return;
    }
  } else if (permit.rejection().retry_after > retry) {
    retry = permit.rejection().retry_after;
  }
  answer_unavailable(cached, retry, res);
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

// Reads ?page=N (default 0); false if it is not an integer in [0, 1000000].
bool parse_page(const request& req, std::int64_t& page) {
  std::string_view text;
  page = 0;
  return !req.query_param("page", text) ||
         (parse_int(text, page) && page >= 0 && page <= 1'000'000);
}

// GET /api/data?page=N: pages cached for the TTL; concurrent misses on one page build it once
// (single flight), so an expiring hot page cannot stampede the backend.
void api_data(app& a, const request& req, response& res) {
  std::int64_t page = 0;
  if (!parse_page(req, page)) return res.error(400, "page must be an integer in [0, 1000000]");
  bool loaded = false;
  absl::StatusOr<body_ptr> body =
      a.prims->pages.get_or_load(page, [&loaded](std::int64_t pg) -> absl::StatusOr<body_ptr> {
        loaded = true;
        return std::make_shared<const std::string>(build_page(pg));
      });
  if (!body.ok()) return res.error(500, "cannot build page");
  cached_body(res, *body, loaded ? "MISS" : "HIT");
}

// GET /api/data?page=N in Redis mode: the seed's Redis cache middleware done right, on
// sluice::redis::l2_cache: a local copy (<= 1 s), else Redis, else the page is built once per
// instance however many requests miss at once (single flight) and SET with EX = the TTL.
boost::asio::awaitable<void> api_data_async(app& a, const request& req, response& res) {
  std::int64_t page = 0;
  if (!parse_page(req, page)) {
    res.error(400, "page must be an integer in [0, 1000000]");
    co_return;
  }
  const char* x_cache = "MISS";
  absl::StatusOr<body_ptr> body = co_await a.redis->get_page(page, build_page, x_cache);
  if (!body.ok()) {
    res.set("Retry-After", "1");
    res.error(503, "page cache unavailable");
    co_return;
  }
  cached_body(res, *body, x_cache);
}

// POST /compute {"value":N}: sum of sin(i)*cos(i) over [0, N*10000). Runs on the offload
// executor (route_kind::offloaded), never on an event loop.
void compute(app&, const request& req, response& res) {
  boost::system::error_code ec;
  boost::json::value v =
      boost::json::parse(boost::json::string_view(req.body.data(), req.body.size()), ec);
  const boost::json::value* n = nullptr;
  if (!ec && v.is_object()) n = v.as_object().if_contains("value");
  std::int64_t value = 0;
  if (n != nullptr && n->is_int64()) {
    value = n->as_int64();
  } else if (n != nullptr && n->is_uint64()) {
    value = 0;  // larger than any int64: out of range below
  } else {
    return res.error(400, "body must be JSON {\"value\":N} with an integer N");
  }
  if (value < 1 || value > 1000) return res.error(400, "value must be an integer in [1, 1000]");
  double sum = 0;
  const std::int64_t end = value * 10'000;
  for (std::int64_t i = 0; i < end; ++i) {
    const auto x = static_cast<double>(i);
    sum += std::sin(x) * std::cos(x);
  }
  json_body(res, boost::json::object{{"result", sum}});
}

void metrics(app& a, const request&, response& res) {
  res.content_type = metrics_content_type;
  res.body = a.metrics->render();
}

}  // namespace

void register_routes(app& a) {
  router& r = a.routes;
  r.add("/hello", get | head, route_kind::buffered, hello, kSmallBody);
  r.add("/healthz", get | head, route_kind::buffered, healthz, kSmallBody, false);
  r.add("/readyz", get | head, route_kind::buffered, readyz, kSmallBody, false);
  // A synchronous store (the embedded one) is called in place: no coroutine frame per request.
  if (a.users->synchronous()) {
    r.add("/users/:id", get | head, route_kind::buffered, users_by_id, kSmallBody);
  } else {
    r.add("/users/:id", get | head, users_by_id_async, kSmallBody);
  }
  if (a.redis) {
    r.add("/api/data", get | head, api_data_async, kSmallBody);
  } else {
    r.add("/api/data", get | head, route_kind::buffered, api_data, kSmallBody);
  }
  r.add("/metrics", get | head, route_kind::buffered, metrics, kSmallBody, false);
  r.add("/compute", post, route_kind::offloaded, compute, 16 * 1024);
  r.add("/download/:name", get | head, route_kind::download, nullptr);
  r.add("/upload", post, route_kind::upload, nullptr);
}

}  // namespace service
