// A DeviceStage for host memory whose copies run asynchronously on a thread
// of its own, in call order, each after an injected delay: a stand-in for a
// GPU's copy stream that lets the CPU suite prove the engine's ordering (a
// copy the engine forgot to wait for is still running when its data is
// used). "Device" addresses are host addresses here.
//
// Thread rules: every method may be called from any thread; one mutex
// guards the queue, and the copies run outside it on the stage's thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "engine/device_stage.hpp"

namespace bagua {

class ThreadedStage : public DeviceStage {
 public:
  struct Delays {
    std::chrono::microseconds copy_out{0};
    std::chrono::microseconds copy_in{0};
  };
  ThreadedStage();
  explicit ThreadedStage(Delays delays);
  // Runs what is queued, then joins.
  ~ThreadedStage() override;

  StagePointPtr record(std::uintptr_t producer) override;
  StagePointPtr copy_out(const void* device, void* host, std::size_t bytes, const StagePointPtr& after,
                         std::shared_ptr<void> keep) override;
  StagePointPtr copy_in(const void* host, void* device, std::size_t bytes, std::shared_ptr<void> keep) override;
  // Blocks until `point` is reached (a host has nothing to hand the wait to).
  void order_before(const StagePointPtr& point, std::uintptr_t consumer, std::chrono::milliseconds timeout,
                    const std::string& what) override;
  std::string name() const override { return "threaded"; }

  // Copies run so far, for tests.
  std::size_t copies_out() const;
  std::size_t copies_in() const;

 private:
  class Point;
  StagePointPtr enqueue(std::chrono::microseconds delay, std::function<void()> work);
  void run();

  const Delays delays_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::size_t copies_out_ = 0;
  std::size_t copies_in_ = 0;
  std::thread thread_;  // last: starts once the rest is built
};

}  // namespace bagua
