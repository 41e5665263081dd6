// server.hpp: the HTTP server: one io_context per event-loop thread, each with its own
// SO_REUSEPORT acceptor, every connection pinned to the loop that accepted it (no strands, no
// locks on the request path). Beast with C++20 coroutines: a fresh parser per request, the
// stream's timeout reset before every read and write, one write at a time per connection.
#pragma once

#include <cstdint>
#include <memory>

#include <absl/status/status.h>

#include "service.hpp"

namespace service {

// Thread safety: listen() and start() from one thread before serving; begin_drain(),
// force_close() and stopped() from any thread afterwards; join() once, from the starting thread.
class server {
 public:
  explicit server(app& a);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // Opens and binds one acceptor per loop on cfg.listen_host:listen_port (port 0: a free port,
  // shared by all loops). Returns Unavailable naming the address if binding fails.
  absl::Status listen();
  // Returns the bound port (after listen()).
  std::uint16_t port() const;
  // Starts the loop threads.
  void start();
  // Stops accepting, closes idle keep-alive connections and lets in-flight requests finish;
  // every response from now on carries `Connection: close`. Returns at once.
  void begin_drain();
  // Closes every connection still open (the drain deadline passed). Uploads in progress are
  // abandoned and their temporary files removed. Returns at once.
  void force_close();
  // Returns true once every loop has run out of connections and its thread has finished.
  bool stopped() const;
  // Waits for the loop threads to finish.
  void join();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace service
