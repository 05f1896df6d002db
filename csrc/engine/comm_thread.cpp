#include "engine/comm_thread.hpp"

#include <chrono>

namespace bagua {

CommThread::CommThread() : shared_(std::make_shared<Shared>()), thread_(&CommThread::run, shared_) {}

CommThread::~CommThread() {
  std::unique_lock lock(shared_->mu);
  shared_->stopping = true;
  shared_->cv.notify_all();
  // Jobs catch their own exceptions and every wait inside them is bounded,
  // so a healthy thread exits promptly; one still stuck is left to finish on
  // its own (it owns `shared_`), never blocking interpreter shutdown.
  const bool exited = shared_->cv.wait_for(lock, std::chrono::seconds(5), [&] { return shared_->exited; });
  lock.unlock();
  if (exited) {
    thread_.join();
  } else {
    thread_.detach();
  }
}

void CommThread::submit(std::function<void()> job) {
  std::lock_guard lock(shared_->mu);
  shared_->jobs.push_back(std::move(job));
  shared_->cv.notify_all();
}

void CommThread::run(std::shared_ptr<Shared> shared) {
  std::unique_lock lock(shared->mu);
  for (;;) {
    shared->cv.wait(lock, [&] { return shared->stopping || !shared->jobs.empty(); });
    // Jobs still queued at shutdown belong to an engine that is going away;
    // their buffers may already be freed, so they are dropped, not run.
    if (shared->stopping) break;
    auto job = std::move(shared->jobs.front());
    shared->jobs.pop_front();
    lock.unlock();
    job();
    lock.lock();
  }
  shared->exited = true;
  shared->cv.notify_all();
}

}  // namespace bagua
