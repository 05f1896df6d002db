#include "comm/comm_thread.hpp"

#include <chrono>

namespace bagua {

CommThread::CommThread() : shared_(std::make_shared<Shared>()), thread_(&CommThread::run, shared_) {
  std::lock_guard lock(registry_mutex());
  auto& all = registry();
  std::erase_if(all, [](const auto& w) { return w.expired(); });
  all.push_back(shared_);
}

std::mutex& CommThread::registry_mutex() {
  static auto* mu = new std::mutex;
  return *mu;
}

std::vector<std::weak_ptr<CommThread::Shared>>& CommThread::registry() {
  static auto* all = new std::vector<std::weak_ptr<Shared>>;
  return *all;
}

bool CommThread::settle_all(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<std::shared_ptr<Shared>> live;
  {
    std::lock_guard lock(registry_mutex());
    for (const auto& w : registry()) {
      if (auto s = w.lock()) live.push_back(std::move(s));
    }
  }
  // A marker job behind each queue: a thread reaches it only after it has
  // destroyed every job before it (run() destroys each before taking the
  // next), and a dropped marker counts as reached.
  struct Markers {
    std::mutex mu;
    std::condition_variable cv;
    int left = 0;
  };
  auto markers = std::make_shared<Markers>();
  const auto reached = [markers] {
    std::lock_guard lock(markers->mu);
    --markers->left;
    markers->cv.notify_all();
  };
  for (const auto& s : live) {
    std::lock_guard lock(s->mu);
    if (s->stopping) continue;
    {
      std::lock_guard count(markers->mu);
      ++markers->left;
    }
    s->jobs.push_back(Job{reached, reached});
    s->cv.notify_all();
  }
  std::unique_lock lock(markers->mu);
  return markers->cv.wait_until(lock, deadline, [&] { return markers->left == 0; });
}

CommThread::~CommThread() {
  std::deque<Job> dropped;
  std::unique_lock lock(shared_->mu);
  shared_->stopping = true;
  dropped.swap(shared_->jobs);
  shared_->cv.notify_all();
  lock.unlock();
  for (auto& job : dropped) {
    if (job.on_drop) job.on_drop();
  }
  lock.lock();
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

void CommThread::submit(std::function<void()> job, std::function<void()> on_drop) {
  std::lock_guard lock(shared_->mu);
  shared_->jobs.push_back(Job{std::move(job), std::move(on_drop)});
  shared_->cv.notify_all();
}

void CommThread::run(std::shared_ptr<Shared> shared) {
  std::unique_lock lock(shared->mu);
  for (;;) {
    shared->cv.wait(lock, [&] { return shared->stopping || !shared->jobs.empty(); });
    if (shared->stopping) break;
    auto job = std::move(shared->jobs.front());
    shared->jobs.pop_front();
    lock.unlock();
    job.run();
    // The job dies here, before the lock is taken again: what it captured
    // may take other locks as it goes (a tensor's last reference takes
    // Python's GIL), and the thread holding that one may be waiting in
    // submit() for this lock. Destroyed under it, the two deadlock.
    job = Job{};
    lock.lock();
  }
  shared->exited = true;
  shared->cv.notify_all();
}

}  // namespace bagua
