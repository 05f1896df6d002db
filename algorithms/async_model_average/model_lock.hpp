// The lock between training and a thread that changes the weights on its
// own. Training holds it from the forward pre-hook to the end of the
// optimizer step: BAGUA released it at the end of backward, so its
// background update could land inside optimizer.step's read-modify-write of
// the same weights and be lost. A checkpoint holds it while it copies or
// replaces the weights. The thread takes it only for memory work (a snapshot,
// an update), never across the network, and training yields to a thread that
// is waiting, so neither side starves the other.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>

namespace bagua {

class ModelLock {
 public:
  // Training's side, from its one thread; holding twice is holding once.
  // Waits for the thread's memory work (bounded by `timeout`).
  void hold_for_training(std::chrono::milliseconds timeout);
  void release_training();
  bool training_holds() const;

  // A checkpoint's copy or load; counted, so nested holds are fine.
  void hold_for_checkpoint(std::chrono::milliseconds timeout);
  void release_checkpoint();

  // The thread's side: runs `work` while neither training nor a checkpoint
  // holds the lock. Returns false, without running it, once abandon() was
  // called: the weights may then no longer exist.
  bool run_exclusive(const std::function<void()>& work);

  // From now on run_exclusive runs nothing; waits for a running `work`.
  void abandon();

 private:
  // Waits until the thread is neither waiting nor working; with mu_ held.
  void wait_for_thread(std::unique_lock<std::mutex>& lock, std::chrono::milliseconds timeout, const char* who);

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool training_ = false;
  int checkpoints_ = 0;
  bool thread_waiting_ = false;
  bool thread_working_ = false;
  bool abandoned_ = false;
};

}  // namespace bagua
