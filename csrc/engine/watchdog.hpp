// Tracks the operations handed to the communication thread and turns one that
// outlives its deadline into a TimeoutError that names the rank, the
// operation and the bucket. Waits happen on the caller's (training) thread so
// the error surfaces where the user can catch it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace bagua {

class Watchdog {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Watchdog(int rank) : rank_(rank) {}

  // Registers an operation; returns its ticket.
  std::size_t add(std::string label);
  // Called by the worker around the operation's run.
  void started(std::size_t ticket);
  void finished(std::size_t ticket, std::exception_ptr error);

  // Waits until every registered operation has finished, or until one has run
  // longer than `timeout`. Rethrows the first failure with its label. Clears
  // the list when all succeeded.
  void wait_all(std::chrono::milliseconds timeout);

  bool idle();

 private:
  struct Op {
    std::string label;
    std::optional<Clock::time_point> started;
    bool done = false;
    std::exception_ptr error;
  };

  const int rank_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Op> ops_;
};

}  // namespace bagua
