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

  // Registers an operation; returns its ticket. Throws once an earlier
  // operation failed or timed out: a communicator that lost a peer or a
  // message cannot be trusted with the next one.
  std::size_t add(std::string label);
  // Called by the worker around the operation's run.
  void started(std::size_t ticket);
  void finished(std::size_t ticket, std::exception_ptr error);

  // Waits until every registered operation has finished, or until one has run
  // longer than `timeout`. Rethrows the first failure with its label. Clears
  // the list only when all succeeded: after a failure, operations of other
  // buckets may still be running and will report to their tickets.
  void wait_all(std::chrono::milliseconds timeout);

  bool idle();

 private:
  struct Op {
    std::string label;
    std::optional<Clock::time_point> started;
    bool done = false;
    std::exception_ptr error;
  };

  [[noreturn]] void fail(std::string message, bool timeout);  // with mu_ held

  const int rank_;
  std::string failure_;  // set once; every later add/wait_all reports it
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Op> ops_;
};

}  // namespace bagua
