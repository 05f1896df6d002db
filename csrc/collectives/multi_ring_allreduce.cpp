#include "collectives/multi_ring_allreduce.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.hpp"

namespace bagua {
namespace {

// One helper thread that runs one job at a time for its owner. Kept for the
// owner's lifetime so that a ring's scratch memory (thread_scratch) and the
// thread itself are not made anew on every all-reduce.
class RingHelper {
 public:
  RingHelper() : thread_([this] { loop(); }) {}
  ~RingHelper() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  RingHelper(const RingHelper&) = delete;
  RingHelper& operator=(const RingHelper&) = delete;

  void submit(std::function<void()> job) {
    {
      std::lock_guard lock(mu_);
      job_ = std::move(job);
      finished_ = false;
      error_ = nullptr;
    }
    cv_.notify_all();
  }

  // Not bounded by a clock of its own: the job is a ring all-reduce whose
  // every wait is bounded by the communicator's timeout, so it ends.
  std::exception_ptr wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return finished_; });
    return error_;
  }

 private:
  void loop() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stopping_ || job_; });
      if (stopping_) return;
      std::function<void()> job = std::move(job_);
      job_ = nullptr;
      lock.unlock();
      std::exception_ptr error;
      try {
        job();
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      error_ = error;
      finished_ = true;
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> job_;
  bool finished_ = true;
  bool stopping_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: starts after the state above exists
};

RingHelper& helper(int k) {
  thread_local std::vector<std::unique_ptr<RingHelper>> helpers;
  while (static_cast<int>(helpers.size()) <= k) helpers.push_back(std::make_unique<RingHelper>());
  return *helpers[k];
}

}  // namespace

void multi_ring_allreduce(Communicator& comm, const MultiRingPlan& plan, void* data, std::size_t count, DType dtype,
                          ReduceOp op, Tag first_tag, const RingOptions& options) {
  if (std::find(plan.order().begin(), plan.order().end(), comm.rank()) == plan.order().end()) {
    throw InvalidArgument(fmt::format("multi_ring_allreduce: rank {} is not in the plan", comm.rank()));
  }
  if (plan.size() == 1 || count == 0) return;
  const std::size_t elem = dtype_size(dtype);
  const int used = plan.rings_for(count * elem);

  RingOptions ring_options = options;
  if (plan.uneven()) {
    // A rank owning most of a part receives it from a slow link before it
    // can forward anything; smaller pieces start that pipeline sooner.
    const std::size_t part_bytes = plan.part(0, used, count).count * elem;
    ring_options.chunk_bytes = std::clamp<std::size_t>(part_bytes / 32, 64u << 10, options.chunk_bytes);
  }
  auto run_ring = [&, data](int k) {
    const std::vector<Segment> segments = plan.segments(k, plan.part(k, used, count));
    ring_allreduce(comm, plan.ring(k), data, segments, dtype, op, first_tag + static_cast<Tag>(k), ring_options);
  };
  for (int k = 1; k < used; ++k) helper(k - 1).submit([&run_ring, k] { run_ring(k); });
  std::exception_ptr first;
  try {
    run_ring(0);
  } catch (...) {
    first = std::current_exception();
  }
  for (int k = 1; k < used; ++k) {
    std::exception_ptr e = helper(k - 1).wait();
    if (e && !first) first = e;
  }
  if (first) std::rethrow_exception(first);
}

}  // namespace bagua
