// Re-entry into sluice::redis::connection from the handlers it completes inline.
//
// A handler whose executor is the connection's own (a plain callback, or a use_awaitable coroutine
// spawned on the same io_context) is completed by a `dispatch` from inside the connection's
// strand: from the read loop, from fail() (close, a lost server), from cancel_op and from the
// deadline timer. Each test here runs one such handler that, while still inside the connection,
// issues a command, closes, reconnects, destroys the last handle, cancels another command, or
// throws, and then checks that every command completed exactly once, with its own reply or an
// error, and that the connection still works afterwards.
#include <chrono>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/asio/error.hpp"
#include "sluice/redis/command.hpp"
#include "sluice/redis/connection.hpp"
#include "sluice/redis/reply.hpp"

#include "catch.hpp"
#include "redis_support.hpp"

namespace {

namespace net = boost::asio;
namespace redis = sluice::redis;
using boost::system::error_code;
using namespace std::chrono_literals;

// Where the acting handler is completed from.
enum class where { read_loop, fail_close, fail_eof, deadline, cancel };
// What the acting handler does to the connection while it runs.
enum class action { exec, close, reconnect, destroy, cancel_other, throw_ };
// How commands are issued.
enum class style { callback, coroutine };
// The connection's executor: the io_context's, or a strand of it (as for a multi-threaded
// io_context). Coroutines are spawned on the same one, so every handler is "local".
enum class exec_kind { io_context, strand };

const char* name(where w) {
  switch (w) {
    case where::read_loop:
      return "read loop";
    case where::fail_close:
      return "fail() by close";
    case where::fail_eof:
      return "fail() by eof";
    case where::deadline:
      return "deadline timer";
    case where::cancel:
      return "cancel_op";
  }
  return "?";
}
const char* name(action a) {
  switch (a) {
    case action::exec:
      return "exec";
    case action::close:
      return "close";
    case action::reconnect:
      return "reconnect";
    case action::destroy:
      return "destroy";
    case action::cancel_other:
      return "cancel another";
    case action::throw_:
      return "throw";
  }
  return "?";
}

struct outcome {
  int calls = 0;
  error_code ec;
  redis::reply reply;
};

using done_fn = std::function<void(error_code, redis::reply)>;

std::string unique_key() {
  static int n = 0;
  return "sluice:test:reentry:" +
         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ":" +
         std::to_string(++n);
}

// One io_context and one connection on its executor; runs the context one handler at a time and
// counts the "boom" exceptions that handlers let out of run(), as Asio allows.
struct harness {
  net::io_context io;
  redis::endpoint ep = sluice_test::shared_endpoint();
  net::any_io_executor ex;
  std::optional<redis::connection> conn;
  style how;
  int throws = 0;

  harness(style s, exec_kind e)
      : ex(e == exec_kind::strand ? net::any_io_executor(net::make_strand(io))
                                  : net::any_io_executor(io.get_executor())),
        how(s) {
    conn.emplace(ex);
    connect();
  }

  // Runs the context until `pred` holds; throws when that takes longer than `limit` (a hang).
  template <class Pred>
  void run_until(Pred pred, std::chrono::milliseconds limit = 5000ms) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error("a handler was never completed (hang)");
      }
      if (io.stopped()) io.restart();
      try {
        io.run_one_for(50ms);
      } catch (const std::runtime_error& e) {
        if (std::string(e.what()) != "boom") throw;
        ++throws;
      }
    }
  }

  void connect() {
    bool done = false;
    error_code ec;
    conn->async_connect(ep, [&](error_code e) {
      done = true;
      ec = e;
    });
    run_until([&] { return done; });
    REQUIRE_FALSE(ec);
  }

  // Issues `cmd`; `done` runs from the connection's completion (inline on its strand).
  void issue(redis::command cmd, std::chrono::milliseconds timeout, done_fn done,
             net::cancellation_slot slot = {}) {
    if (how == style::callback) {
      conn->async_exec(std::move(cmd), timeout,
                       net::bind_cancellation_slot(
                           slot, [done = std::move(done)](error_code ec, redis::reply r) {
                             done(ec, std::move(r));
                           }));
      return;
    }
    redis::connection* c = &*conn;
    net::co_spawn(
        ex,
        [c, cmd = std::move(cmd), timeout,
         done = std::move(done)]() mutable -> net::awaitable<void> {
          auto [ec, r] =
              co_await c->async_exec(std::move(cmd), timeout, net::as_tuple(net::use_awaitable));
          done(ec, std::move(r));
        },
        net::bind_cancellation_slot(slot, [](std::exception_ptr e) {
          if (e) std::rethrow_exception(e);
        }));
  }

  // Runs `f` on the context after the commands issued so far reached the connection's strand
  // (a coroutine submits one hop after co_spawn, its drain one hop later).
  void later(std::function<void()> f) {
    net::post(io, [this, f = std::move(f)] { net::post(io, f); });
  }
};

done_fn record(outcome& o) {
  return [&o](error_code ec, redis::reply r) {
    ++o.calls;
    o.ec = ec;
    o.reply = std::move(r);
  };
}

// Checks that `o` completed once and, when it succeeded, with `expected` (its own reply).
void check_matched(const outcome& o, const redis::reply& expected, const char* what) {
  INFO(what << ": ec " << o.ec.message());
  CHECK(o.calls == 1);
  if (!o.ec) CHECK(o.reply == expected);
}

void run_scenario(where w, action a, style s, exec_kind e) {
  INFO("completed from " << name(w) << ", handler does " << name(a) << ", "
                         << (s == style::callback ? "callbacks" : "coroutines") << " on "
                         << (e == exec_kind::strand ? "a strand" : "the io_context"));
  harness h(s, e);
  net::cancellation_signal actor_sig;
  net::cancellation_signal victim_sig;
  outcome prefix;
  outcome actor;
  outcome follower;
  outcome victim;
  outcome extra;
  int reconnects = 0;
  error_code reconnect_ec;
  const std::string k = unique_key();
  const bool blocking = w == where::deadline || w == where::cancel;

  auto act = [&] {
    switch (a) {
      case action::exec:
        h.issue(redis::command{"ECHO", "extra"}, 2000ms, record(extra));
        break;
      case action::close:
        h.conn->close();
        break;
      case action::reconnect:
        h.conn->async_connect(h.ep, [&](error_code ec) {
          ++reconnects;
          reconnect_ec = ec;
        });
        break;
      case action::destroy:
        h.conn.reset();
        break;
      case action::cancel_other:
        victim_sig.emit(net::cancellation_type::terminal);
        break;
      case action::throw_:
        throw std::runtime_error("boom");
    }
  };
  done_fn actor_done = [&, rec = record(actor)](error_code ec, redis::reply r) {
    rec(ec, std::move(r));
    act();
  };

  // The server answers BLPOP after 0.3 s with nil; the commands behind it wait for it.
  if (w == where::fail_eof) h.issue(redis::command{"QUIT"}, 2000ms, record(prefix));
  if (w == where::deadline) {
    h.issue(redis::command{"BLPOP", k, "0.3"}, 30ms, actor_done);
    h.issue(redis::command{"BLPOP", k, "0.3"}, 30ms, record(follower));  // expires with the actor
  } else if (w == where::cancel) {
    h.issue(redis::command{"BLPOP", k, "0.3"}, 0ms, actor_done, actor_sig.slot());
    h.issue(redis::command{"ECHO", "a1"}, 2000ms, record(follower));
  } else {
    h.issue(redis::command{"ECHO", "a0"}, 2000ms, actor_done);
    h.issue(redis::command{"ECHO", "a1"}, 2000ms, record(follower));
  }
  h.issue(redis::command{"ECHO", "a2"}, 2000ms, record(victim), victim_sig.slot());
  if (w == where::fail_close) h.later([&] { h.conn->close(); });
  if (w == where::cancel) h.later([&] { actor_sig.emit(net::cancellation_type::terminal); });

  h.run_until([&] {
    return actor.calls > 0 && follower.calls > 0 && victim.calls > 0 &&
           (w != where::fail_eof || prefix.calls > 0) && (a != action::exec || extra.calls > 0) &&
           (a != action::reconnect || reconnects > 0);
  });

  // Where the acting handler was completed from.
  INFO("actor ec " << actor.ec.message());
  switch (w) {
    case where::read_loop:
      CHECK(actor.ec == error_code{});
      CHECK(actor.reply == redis::reply::string("a0"));
      break;
    case where::fail_close:
      CHECK(actor.ec == sluice::asio::error::cancelled);
      break;
    case where::fail_eof:
      CHECK(prefix.reply.is_status("OK"));
      CHECK(actor.ec);
      CHECK(actor.ec != sluice::asio::error::data_loss);
      break;
    case where::deadline:
      CHECK(actor.ec == sluice::asio::error::deadline_exceeded);
      break;
    case where::cancel:
      CHECK(actor.ec == net::error::operation_aborted);
      break;
  }

  // Actions that leave the session up must not disturb the other commands.
  const bool session_kept = a == action::exec || a == action::cancel_other || a == action::throw_;
  const bool up = w == where::read_loop || blocking;
  if (session_kept && up) {
    if (w == where::deadline) {
      CHECK(follower.ec == sluice::asio::error::deadline_exceeded);
    } else {
      CHECK(follower.ec == error_code{});
    }
    if (a != action::cancel_other) CHECK(victim.ec == error_code{});
  }
  if (a == action::cancel_other && up && victim.ec) {
    CHECK(victim.ec == net::error::operation_aborted);
  }
  if (a == action::exec && up) CHECK(extra.ec == error_code{});
  if (a == action::reconnect) CHECK_FALSE(reconnect_ec);
  if (a == action::throw_) CHECK(h.throws == 1);

  // The connection (when the handler left one) still works, and its replies stay matched: this
  // command is answered after every earlier one, dropped or not.
  if (h.conn) {
    if (!h.conn->is_connected()) h.connect();
    outcome last;
    h.issue(redis::command{"ECHO", "last"}, 2000ms, record(last));
    h.run_until([&] { return last.calls > 0; });
    check_matched(last, redis::reply::string("last"), "a command issued afterwards");
    h.conn.reset();
  }
  // Out of work once the connection is gone: nothing is left waiting.
  if (h.io.stopped()) h.io.restart();
  h.io.run_for(5s);
  CHECK(h.io.stopped());

  const redis::reply nil = redis::reply{};
  check_matched(actor, w == where::read_loop ? redis::reply::string("a0") : nil, "actor");
  check_matched(follower, w == where::deadline ? nil : redis::reply::string("a1"), "follower");
  check_matched(victim, redis::reply::string("a2"), "victim");
  if (w == where::fail_eof) CHECK(prefix.calls == 1);
  if (a == action::exec) check_matched(extra, redis::reply::string("extra"), "extra");
  if (a == action::reconnect) CHECK(reconnects == 1);
  CHECK(h.throws == (a == action::throw_ ? 1 : 0));
}

}  // namespace

TEST_CASE("redis_connection: handlers completed inline may re-enter the connection",
          "[redis_connection][reentry]") {
  const where w = GENERATE(where::read_loop, where::fail_close, where::fail_eof, where::deadline,
                           where::cancel);
  const action a = GENERATE(action::exec, action::close, action::reconnect, action::destroy,
                            action::cancel_other, action::throw_);
  const style s = GENERATE(style::callback, style::coroutine);
  const exec_kind e = GENERATE(exec_kind::io_context, exec_kind::strand);
  run_scenario(w, a, s, e);
}

TEST_CASE("redis_connection: a handler that throws on a strand executor leaves the rest intact",
          "[redis_connection][reentry]") {
  // On a strand executor the exception unwinds through the connection (io_context executors
  // hold it back), from drain() and from the fail() inside a reconnect.
  harness h(style::callback, exec_kind::strand);
  std::vector<outcome> out(3);
  auto issue_three = [&] {
    for (std::size_t i = 0; i < out.size(); ++i) {
      done_fn rec = record(out[i]);
      if (i == 0) {
        rec = [r = std::move(rec)](error_code ec, redis::reply rep) {
          r(ec, std::move(rep));
          throw std::runtime_error("boom");
        };
      }
      h.issue(redis::command{"ECHO", "t" + std::to_string(i)}, 2000ms, std::move(rec));
    }
  };
  auto all_done = [&] {
    for (const outcome& o : out) {
      if (o.calls == 0) return false;
    }
    return true;
  };

  SECTION("drain() completing commands of a closed connection") {
    h.conn->close();
    h.run_until([&] { return !h.conn->is_connected(); });
    issue_three();  // one burst: one drain completes all three with unavailable
    h.run_until(all_done);
    for (const outcome& o : out) {
      CHECK(o.ec == sluice::asio::error::unavailable);
    }
  }
  SECTION("fail() inside async_connect on a connected connection") {
    issue_three();
    bool connected = false;
    error_code connect_ec;
    h.conn->async_connect(h.ep, [&](error_code ec) {
      connected = true;
      connect_ec = ec;
    });
    h.run_until([&] { return all_done() && connected; });
    CHECK_FALSE(connect_ec);
    for (const outcome& o : out) {
      CHECK(o.ec == sluice::asio::error::cancelled);
    }
  }
  CHECK(h.throws == 1);
  outcome last;
  if (!h.conn->is_connected()) h.connect();
  h.issue(redis::command{"ECHO", "last"}, 2000ms, record(last));
  h.run_until([&] { return last.calls > 0; });
  check_matched(last, redis::reply::string("last"), "a command issued afterwards");
  h.conn.reset();
  if (h.io.stopped()) h.io.restart();
  h.io.run_for(5s);
  CHECK(h.io.stopped());
  for (const outcome& o : out) {
    CHECK(o.calls == 1);
  }
}
