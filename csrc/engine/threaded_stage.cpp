#include "engine/threaded_stage.hpp"

#include <cstring>

namespace bagua {

class ThreadedStage::Point : public StagePoint {
 public:
  void reach() {
    std::lock_guard lock(mu_);
    reached_ = true;
    cv_.notify_all();
  }
  bool wait_for(std::chrono::milliseconds timeout) override {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return reached_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool reached_ = false;
};

ThreadedStage::ThreadedStage() : ThreadedStage(Delays{}) {}

ThreadedStage::ThreadedStage(Delays delays) : delays_(delays), thread_([this] { run(); }) {}

ThreadedStage::~ThreadedStage() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  thread_.join();
}

StagePointPtr ThreadedStage::enqueue(std::chrono::microseconds delay, std::function<void()> work) {
  auto point = std::make_shared<Point>();
  std::lock_guard lock(mu_);
  queue_.push_back([delay, work = std::move(work), point] {
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    if (work) work();
    point->reach();
    // `work` (and what it keeps alive) goes with this task, on this thread.
  });
  cv_.notify_all();
  return point;
}

StagePointPtr ThreadedStage::record(std::uintptr_t /*producer*/) {
  // The host wrote the gradients before it asked: the point is reached once
  // the copies queued before it are.
  return enqueue({}, {});
}

StagePointPtr ThreadedStage::copy_out(const void* device, void* host, std::size_t bytes, const StagePointPtr& after,
                                      std::shared_ptr<void> keep) {
  // `after` comes before this copy in the queue (one queue, call order), so
  // reaching it needs no wait here.
  (void)after;
  return enqueue(delays_.copy_out, [this, device, host, bytes, keep = std::move(keep)] {
    std::memcpy(host, device, bytes);
    std::lock_guard lock(mu_);
    ++copies_out_;
  });
}

StagePointPtr ThreadedStage::copy_in(const void* host, void* device, std::size_t bytes, std::shared_ptr<void> keep) {
  return enqueue(delays_.copy_in, [this, host, device, bytes, keep = std::move(keep)] {
    std::memcpy(device, host, bytes);
    std::lock_guard lock(mu_);
    ++copies_in_;
  });
}

void ThreadedStage::order_before(const StagePointPtr& point, std::uintptr_t /*consumer*/,
                                 std::chrono::milliseconds timeout, const std::string& what) {
  wait_for_point(*this, point, timeout, what);
}

std::size_t ThreadedStage::copies_out() const {
  std::lock_guard lock(mu_);
  return copies_out_;
}

std::size_t ThreadedStage::copies_in() const {
  std::lock_guard lock(mu_);
  return copies_in_;
}

void ThreadedStage::run() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued ran
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

}  // namespace bagua
