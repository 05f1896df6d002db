// One thread that runs communication jobs strictly in submission order, which
// is what keeps every rank's operations in the same global order.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

namespace bagua {

class CommThread {
 public:
  CommThread();
  // Stops after the running job; queued jobs are dropped. A job stuck in a wait ends by that wait's own
  // timeout; the thread is detached rather than blocking the caller forever.
  ~CommThread();
  CommThread(const CommThread&) = delete;
  CommThread& operator=(const CommThread&) = delete;

  void submit(std::function<void()> job);

 private:
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::function<void()>> jobs;
    bool stopping = false;
    bool exited = false;
  };
  static void run(std::shared_ptr<Shared> shared);

  std::shared_ptr<Shared> shared_;
  std::thread thread_;
};

}  // namespace bagua
