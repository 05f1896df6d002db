// One thread that runs communication jobs strictly in submission order, which
// is what keeps every rank's operations in the same global order.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

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

  // Waits, at most `timeout` in all, until every communication thread of
  // the process has run and destroyed each job submitted before the call;
  // returns whether all did. For the moment before an embedding interpreter
  // shuts down: a job's captures may hold the last reference of a tensor
  // Python has seen, and a thread that drops one then asks for the GIL and
  // is ended mid-destructor, which aborts the process.
  static bool settle_all(std::chrono::milliseconds timeout);

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
  // Every live thread's state, for settle_all; never destroyed, so that a
  // thread outliving static destruction still finds it.
  static std::mutex& registry_mutex();
  static std::vector<std::weak_ptr<Shared>>& registry();

  std::shared_ptr<Shared> shared_;
  std::thread thread_;
};

}  // namespace bagua
