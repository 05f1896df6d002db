#include "engine/watchdog.hpp"

#include <fmt/format.h>

#include "core/error.hpp"

namespace bagua {

std::size_t Watchdog::add(std::string label) {
  std::lock_guard lock(mu_);
  if (!failure_.empty()) throw Error(fmt::format("communication failed earlier, nothing more can run: {}", failure_));
  Op op;
  op.label = std::move(label);
  ops_.push_back(std::move(op));
  return ops_.size() - 1;
}

void Watchdog::started(std::size_t ticket) {
  std::lock_guard lock(mu_);
  ops_[ticket].started = Clock::now();
  cv_.notify_all();
}

void Watchdog::finished(std::size_t ticket, std::exception_ptr error) {
  std::lock_guard lock(mu_);
  ops_[ticket].done = true;
  ops_[ticket].error = std::move(error);
  cv_.notify_all();
}

bool Watchdog::idle() {
  std::lock_guard lock(mu_);
  for (const auto& op : ops_) {
    if (!op.done) return false;
  }
  return true;
}

void Watchdog::fail(std::string message, bool timeout) {
  failure_ = message;
  if (timeout) throw TimeoutError(message);
  throw Error(message);
}

void Watchdog::wait_all(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  if (!failure_.empty()) throw Error(fmt::format("communication failed earlier: {}", failure_));
  // An operation queued behind a slow one has not started, so its own clock
  // has not started either; this wait also bounds the queueing itself.
  const auto wait_started = Clock::now();
  for (;;) {
    const Op* running = nullptr;
    bool all_done = true;
    for (const auto& op : ops_) {
      if (op.done && op.error) {
        try {
          std::rethrow_exception(op.error);
        } catch (const TimeoutError& e) {
          fail(fmt::format("rank {}: {} timed out: {}", rank_, op.label, e.what()), true);
        } catch (const std::exception& e) {
          fail(fmt::format("rank {}: {} failed: {}", rank_, op.label, e.what()), false);
        }
      }
      if (!op.done) {
        all_done = false;
        if (op.started && !running) running = &op;
      }
    }
    if (all_done) {
      ops_.clear();
      return;
    }
    const auto now = Clock::now();
    const auto clock_start = running ? *running->started : wait_started;
    if (now - clock_start >= timeout) {
      const Op* stuck = running;
      if (!stuck) {
        for (const auto& op : ops_) {
          if (!op.done) { stuck = &op; break; }
        }
      }
      fail(fmt::format("rank {}: {} did not finish within {:.1f} s; a peer is dead or stalled (check the other "
                       "ranks' logs), or raise the timeout", rank_, stuck->label, timeout.count() / 1000.0),
           true);
    }
    cv_.wait_until(lock, clock_start + timeout);
  }
}

}  // namespace bagua
