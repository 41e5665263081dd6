// user_store.cpp: the embedded, in-process user store.
#include "user_store.hpp"

#include <vector>

#include <sys/stat.h>

#include <absl/status/status.h>

namespace service {

boost::asio::awaitable<absl::StatusOr<std::optional<user>>> user_store::async_get(std::int64_t id) {
  co_return get(id);
}

namespace {

class embedded_store final : public user_store {
 public:
  embedded_store(int seed_users, std::string fault_file) : fault_file_(std::move(fault_file)) {
    users_.reserve(static_cast<std::size_t>(seed_users));
    for (int i = 1; i <= seed_users; ++i) {
      std::string name = "user" + std::to_string(i);
      users_.push_back({i, name, name + "@example.com"});
    }
  }

  absl::StatusOr<std::optional<user>> get(std::int64_t id) override {
    if (faulted()) return absl::UnavailableError("embedded store: fault switch is on");
    if (id < 1 || static_cast<std::uint64_t>(id) > users_.size()) return std::optional<user>();
    return std::optional<user>(users_[static_cast<std::size_t>(id - 1)]);
  }

  absl::Status ping() override {
    if (faulted()) return absl::UnavailableError("embedded store: fault switch is on");
    return absl::OkStatus();
  }

  std::string_view kind() const override { return "embedded"; }

 private:
  bool faulted() const {
    struct stat st;
    return !fault_file_.empty() && ::stat(fault_file_.c_str(), &st) == 0;
  }

  std::vector<user> users_;  // immutable after construction: read without locks
  std::string fault_file_;
};

}  // namespace

std::unique_ptr<user_store> make_embedded_store(int seed_users, std::string fault_file) {
  return std::make_unique<embedded_store>(seed_users, std::move(fault_file));
}

}  // namespace service
