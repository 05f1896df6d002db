#include "algorithms/async_model_average/model_lock.hpp"

#include <fmt/format.h>

#include "core/error.hpp"

namespace bagua {

void ModelLock::wait_for_thread(std::unique_lock<std::mutex>& lock, std::chrono::milliseconds timeout,
                                const char* who) {
  // Yield to a waiting thread too: otherwise a training loop that takes the
  // lock again right after releasing it would never let an update in.
  if (!cv_.wait_for(lock, timeout, [&] { return abandoned_ || (!thread_waiting_ && !thread_working_); })) {
    throw TimeoutError(fmt::format("{}: the background thread's update of the weights did not finish within {} ms",
                                   who, timeout.count()));
  }
}

void ModelLock::hold_for_training(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  // Training and checkpoints run on the caller's side of the lock: when one
  // holds it the thread is kept out already.
  if (!training_ && checkpoints_ == 0) wait_for_thread(lock, timeout, "training step");
  training_ = true;
}

void ModelLock::release_training() {
  std::lock_guard lock(mu_);
  training_ = false;
  cv_.notify_all();
}

bool ModelLock::training_holds() const {
  std::lock_guard lock(mu_);
  return training_;
}

void ModelLock::hold_for_checkpoint(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  if (!training_ && checkpoints_ == 0) wait_for_thread(lock, timeout, "checkpoint");
  ++checkpoints_;
}

void ModelLock::release_checkpoint() {
  std::lock_guard lock(mu_);
  if (checkpoints_ > 0) --checkpoints_;
  cv_.notify_all();
}

bool ModelLock::run_exclusive(const std::function<void()>& work) {
  {
    std::unique_lock lock(mu_);
    thread_waiting_ = true;
    cv_.wait(lock, [&] { return abandoned_ || (!training_ && checkpoints_ == 0); });
    thread_waiting_ = false;
    if (abandoned_) {
      cv_.notify_all();
      return false;
    }
    thread_working_ = true;
  }
  try {
    work();
  } catch (...) {
    std::lock_guard lock(mu_);
    thread_working_ = false;
    cv_.notify_all();
    throw;
  }
  std::lock_guard lock(mu_);
  thread_working_ = false;
  cv_.notify_all();
  return true;
}

void ModelLock::abandon() {
  std::unique_lock lock(mu_);
  abandoned_ = true;
  cv_.notify_all();
  // The work is memory only (a copy or an add over the weights).
  cv_.wait(lock, [&] { return !thread_working_; });
}

}  // namespace bagua
