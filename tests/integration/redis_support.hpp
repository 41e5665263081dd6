// Support for the Redis integration tests: the fixture's server, private servers for destructive
// cases, and a bounded coroutine runner.
#pragma once

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/redis/url.hpp"

namespace sluice_test {

namespace net = boost::asio;

// A redis-server of the test's own, on a free loopback port, stopped by the destructor.
class redis_server {
 public:
  // Starts a server; `extra_args` go to redis-server (e.g. "--requirepass pw").
  explicit redis_server(std::string extra_args = "", std::string password = "")
      : extra_args_(std::move(extra_args)), password_(std::move(password)) {
    char tmpl[] = "/tmp/sluice-redis-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    run("start", "");
    std::ifstream in(dir_ + "/port");
    in >> port_;
  }
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;
  ~redis_server() {
    try {
      run("stop", "");
      std::system(("rm -rf '" + dir_ + "'").c_str());
    } catch (...) {
    }
  }

  // Returns the endpoint (with the password, if any).
  sluice::redis::endpoint endpoint() const {
    sluice::redis::endpoint ep;
    ep.host = "127.0.0.1";
    ep.port = port_;
    ep.password = password_;
    return ep;
  }
  // Kills the server with SIGKILL (a crash) and waits until it is gone.
  void kill() { run("kill", ""); }
  // Starts the server again on the same port.
  void restart() { run("start", std::to_string(port_)); }

 private:
  void run(const std::string& cmd, const std::string& port) const {
    std::string line = "SLUICE_REDIS_EXTRA_ARGS='" + extra_args_ + "' SLUICE_REDIS_PASSWORD='" +
                       password_ + "' " SLUICE_REDIS_FIXTURE_SCRIPT " " + cmd + " '" + dir_ + "' " +
                       port + " >/dev/null";
    if (std::system(line.c_str()) != 0) {
      throw std::runtime_error("redis fixture failed: " + line);
    }
  }

  std::string extra_args_;
  std::string password_;
  std::string dir_;
  std::uint16_t port_ = 0;
};

// Returns the shared server: SLUICE_REDIS_URL, else the CTest fixture's (SLUICE_REDIS_DIR/url),
// else a private server started on first use (when the binary is run by hand).
inline sluice::redis::endpoint shared_endpoint() {
  std::string url;
  if (const char* env = std::getenv("SLUICE_REDIS_URL")) url = env;
  if (url.empty()) {
    if (const char* dir = std::getenv("SLUICE_REDIS_DIR")) {
      std::ifstream in(std::string(dir) + "/url");
      in >> url;
    }
  }
  if (url.empty()) {
    static redis_server server;
    return server.endpoint();
  }
  auto ep = sluice::redis::parse_url(url);
  if (!ep.ok()) throw std::runtime_error("bad SLUICE_REDIS_URL " + url);
  return *ep;
}

// Runs `body` (a coroutine factory) on `io` and fails the test when it does not finish within
// `limit`; rethrows what the coroutine threw. The io_context must run out of work once the
// coroutine ends (connections closed by their destructors).
template <class Body>
void run_bounded(net::io_context& io, Body body,
                 std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  bool done = false;
  std::exception_ptr error;
  net::co_spawn(io, std::move(body), [&](std::exception_ptr e) {
    done = true;
    error = e;
  });
  io.run_for(limit);
  if (!done) throw std::runtime_error("coroutine did not finish in time (hung?)");
  if (error) std::rethrow_exception(error);
  // Lets the posted closes of destroyed connections finish.
  io.restart();
  io.run_for(std::chrono::seconds(2));
}

}  // namespace sluice_test
