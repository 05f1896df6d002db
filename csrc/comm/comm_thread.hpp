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
  // Stops after the running job. Queued jobs are not run (their buffers may
  // be going away); each one's `on_drop` is called instead, so whoever waits
  // on it gets an error rather than waiting forever. A job stuck in a wait
  // ends by that wait's own timeout; the thread is detached rather than
  // blocking the caller forever, and jobs must therefore own (by shared
  // pointer) everything they touch.
  ~CommThread();
  CommThread(const CommThread&) = delete;
  CommThread& operator=(const CommThread&) = delete;

  void submit(std::function<void()> job, std::function<void()> on_drop = {});

 private:
  struct Job {
    std::function<void()> run;
    std::function<void()> on_drop;
  };
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Job> jobs;
    bool stopping = false;
    bool exited = false;
  };
  static void run(std::shared_ptr<Shared> shared);

  std::shared_ptr<Shared> shared_;
  std::thread thread_;
};

}  // namespace bagua
