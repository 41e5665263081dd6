// tests/support/fake_breaker.hpp
//
// A stand-in with sluice::circuit_breaker's acquire interface (try_acquire -> result with a
// permit), counting what the pipeline records, so pipeline tests can open it by hand.
#pragma once

#include "absl/status/status.h"

namespace sluice_test {

struct fake_breaker {
  bool open = false;
  int successes = 0;
  int failures = 0;
  int ignored = 0;
  struct permit {
    fake_breaker* b;
    void record(const absl::Status& s) { s.ok() ? ++b->successes : ++b->failures; }
    void record_failure() { ++b->failures; }
    void record_ignored() { ++b->ignored; }
  };
  struct result {
    permit p;
    bool granted;
    explicit operator bool() const { return granted; }
    permit* operator->() { return &p; }
  };
  result try_acquire() { return {permit{this}, !open}; }
};

}  // namespace sluice_test
