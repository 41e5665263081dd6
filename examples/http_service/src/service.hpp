// service.hpp: the types shared by the service's translation units, free of Beast so the endpoint
// code compiles quickly: the request a handler sees, the response it fills, the router with path
// parameters, and the application state every loop shares.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <absl/container/inlined_vector.h>
#include <boost/asio/awaitable.hpp>

#include "config.hpp"

namespace spdlog {
class logger;
}

namespace service {

class user_store;
class service_metrics;
struct primitives;
class redis_mode;

// The methods the router distinguishes; anything else is `other` (answered 405 or 404).
enum class method : std::uint8_t { get = 1, head = 2, post = 4, put = 8, del = 16, other = 32 };

// Returns the method for its token ("GET", ...), `other` for anything unknown.
method parse_method(std::string_view token);

// A path parameter bound by the router: the value of `:name` in the route's pattern.
struct path_param {
  std::string_view name;
  std::string_view value;
};

// What a buffered handler sees of the request. Views point into the connection's parser and
// buffers and are valid until the handler returns.
struct request {
  method verb = method::other;
  std::string_view method_text;
  std::string_view target;  // path and query as sent
  std::string_view path;
  std::string_view query;  // after '?', without it
  std::string_view body;
  std::string_view content_type;
  std::string_view accept_encoding;
  std::string_view client_ip;
  std::string_view request_id;
  std::string_view range;
  int version = 11;  // 10 for HTTP/1.0
  bool keep_alive = true;
  std::array<path_param, 2> params{};
  std::size_t param_count = 0;

  // Returns the value of path parameter `name`, or an empty view.
  std::string_view param(std::string_view name) const {
    for (std::size_t i = 0; i < param_count; ++i) {
      if (params[i].name == name) return params[i].value;
    }
    return {};
  }
  // Returns the value of query parameter `name` (not percent-decoded), and whether it was present.
  bool query_param(std::string_view name, std::string_view& value) const;
};

// A response header. Names are string literals; values are owned.
struct header {
  std::string_view name;
  std::string value;
};

// What a handler produces. `content_type` must point at static storage (a literal).
struct response {
  unsigned status = 200;
  std::string_view content_type = "application/json";
  std::string body;
  absl::InlinedVector<header, 4> headers;
  bool close = false;     // ask the connection to close after this response
  bool streamed = false;  // the connection already wrote this response (downloads)

  // Adds a header (name must be a literal).
  void set(std::string_view name, std::string value) {
    headers.push_back({name, std::move(value)});
  }
  // Replaces the body with `{"error":"<message>"}` and sets the status.
  void error(unsigned code, std::string_view message);
};

// How the connection must treat a route's body.
enum class route_kind : std::uint8_t {
  buffered,   // body read whole (bounded by route.max_body), handler fills a response
  upload,     // body streamed to disk by the connection (POST /upload)
  download,   // response streamed from disk by the connection (GET/HEAD /download/:name)
  offloaded,  // as buffered, but the handler runs on the offload executor (CPU-heavy work)
  async,      // as buffered, but the handler is a coroutine the connection co_awaits on its loop
              // (it waits for I/O, e.g. Redis, without blocking the loop)
};

struct app;
using handler_fn = void (*)(app&, const request&, response&);
// A coroutine handler (route_kind::async). The request's views stay valid until it completes.
using async_handler_fn = boost::asio::awaitable<void> (*)(app&, const request&, response&);

struct route {
  std::string_view pattern;  // "/users/:id": also the metrics label
  std::uint8_t methods = 0;  // bitwise or of `method`
  route_kind kind = route_kind::buffered;
  handler_fn handler = nullptr;
  async_handler_fn async_handler = nullptr;  // route_kind::async only
  std::size_t max_body = 0;  // largest body read for a buffered route; larger -> 413
  bool rate_limited = true;  // false for probes and scrapes (/healthz, /readyz, /metrics)
  std::string allow;         // the Allow header for a 405, built by router::add
};

// Matches paths against patterns with `:name` segments. Built once before the loops start, then
// read concurrently without locks. Lookup is a scan over the routes comparing segments in place:
// no allocation.
class router {
 public:
  struct match {
    const route* found = nullptr;  // nullptr: no route for this method (see path_known)
    bool path_known = false;       // some route matches the path with another method -> 405
    const route* allow_from = nullptr;
  };

  // Adds a route; a pattern may appear once per method set. Not thread-safe: call before serving.
  void add(std::string_view pattern, std::uint8_t methods, route_kind kind, handler_fn handler,
           std::size_t max_body = 0, bool rate_limited = true);
  // Adds a coroutine route (route_kind::async).
  void add(std::string_view pattern, std::uint8_t methods, async_handler_fn handler,
           std::size_t max_body = 0, bool rate_limited = true);
  // Finds the route for (verb, path) and binds its parameters into `req`.
  match find(method verb, std::string_view path, request& req) const;

 private:
  std::vector<route> routes_;
};

// ---- support.cpp: the middleware pieces that need no Beast ----------------------------------------

// Returns `client` if it is a sane request id (1..128 of [A-Za-z0-9._:+=/-]), else writes a new
// random 32-hex-digit id into `buf` and returns a view of it.
std::string_view pick_request_id(std::string_view client, std::array<char, 32>& buf);

// Returns true if the Accept-Encoding value allows gzip (a `gzip` or `*` token without q=0).
bool accepts_gzip(std::string_view accept_encoding);
// Returns true if a body of this type and size should be compressed (text or JSON, >= 1024 bytes).
bool compressible(std::string_view content_type, std::size_t size);
// Compresses `in` as a gzip member into `out` (zlib, default level). Returns false on failure.
bool gzip(std::string_view in, std::string& out);

// Incremental SHA-256 (OpenSSL libcrypto).
class sha256 {
 public:
  sha256();
  ~sha256();
  sha256(const sha256&) = delete;
  sha256& operator=(const sha256&) = delete;
  // Adds bytes to the digest.
  void update(const void* data, std::size_t size);
  // Returns the lowercase hex digest; the object must not be updated afterwards.
  std::string hex();

 private:
  void* ctx_;
};

// Trusted reverse proxies: X-Forwarded-For is believed only from these peers.
class proxy_list {
 public:
  // Parses CIDRs ("10.0.0.0/8", "::1/128", a bare address means /32 or /128). Returns false and
  // names the bad entry in `error` on a malformed one.
  bool parse(const std::vector<std::string>& cidrs, std::string& error);
  // Returns the client address: `peer`, or if `peer` is trusted, the right-most address of
  // `forwarded_for` that is not itself a trusted proxy.
  std::string_view client(std::string_view peer, std::string_view forwarded_for) const;
  bool empty() const { return nets_.empty(); }

 private:
  struct net {
    std::array<unsigned char, 16> bytes{};
    bool v6 = false;
    int prefix = 0;
  };
  bool trusted(std::string_view address) const;
  std::vector<net> nets_;
};

// One access-log line's fields.
struct access_entry {
  std::string_view request_id;
  std::string_view client_ip;
  std::string_view method;
  std::string_view path;
  std::string_view route;
  unsigned status = 0;
  std::uint64_t bytes = 0;
  double duration_seconds = 0;
};

// Writes one JSON access-log line through the asynchronous logger.
void log_access(spdlog::logger& log, const access_entry& e);
// Appends `s` to `out` as the inside of a JSON string (quotes not included).
void json_escape(std::string_view s, std::string& out);

// Application state shared by every loop. Immutable after start-up except where noted.
struct app {
  config cfg;
  // First, so it is destroyed last: every other member may log until its destructor finished.
  std::shared_ptr<spdlog::logger> log;
  router routes;
  std::unique_ptr<user_store> users;
  std::unique_ptr<service_metrics> metrics;
  std::unique_ptr<primitives> prims;  // after metrics: registers collectors on it
  // Redis mode only (null in the embedded default): the Redis client, the shared page cache and
  // the distributed rate limiter. After prims and metrics: destroyed first.
  std::unique_ptr<redis_mode> redis;
  proxy_list proxies;
  // Set once when SIGTERM/SIGINT starts the drain; read by /readyz. Relaxed: a flag with no data
  // published through it.
  std::atomic<bool> draining{false};

  app();
  ~app();
};

// Registers every buffered endpoint and the streaming routes' patterns (handlers.cpp).
void register_routes(app& a);

}  // namespace service
