#include "engine/engine.hpp"

#include <fmt/format.h>

#include "comm/tags.hpp"
#include "core/error.hpp"

namespace bagua {
Engine::Engine(CommunicatorPtr comm, std::shared_ptr<Algorithm> algorithm, std::chrono::milliseconds timeout,
               int lanes)
    : comm_(std::move(comm)), algorithm_(std::move(algorithm)), timeout_(timeout) {
  if (!comm_ || !algorithm_) throw InvalidArgument("Engine needs a communicator and an algorithm");
  if (lanes < 1 || lanes > 16) throw InvalidArgument(fmt::format("lanes must be in [1, 16], got {}", lanes));
  watchdog_ = std::make_shared<Watchdog>(comm_->rank());
  for (int i = 0; i < lanes; ++i) lanes_.push_back(std::make_unique<CommThread>());
}

void Engine::set_buckets(std::vector<BucketSpec> buckets, std::size_t num_tensors) {
  std::lock_guard lock(mu_);
  if (!watchdog_->idle()) throw Error("set_buckets called while bucket operations are in flight");
  bucket_of_.assign(num_tensors, -1);
  for (std::size_t b = 0; b < buckets.size(); ++b) {
    for (std::size_t t : buckets[b].tensors) {
      if (t >= num_tensors) throw InvalidArgument(fmt::format("bucket {} names tensor {} of {}", b, t, num_tensors));
      if (bucket_of_[t] != -1) throw InvalidArgument(fmt::format("tensor {} is in two buckets", t));
      bucket_of_[t] = static_cast<int>(b);
    }
  }
  buckets_ = std::move(buckets);
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    algorithm_->init_operations(BucketView{static_cast<int>(b), buckets_[b].data, buckets_[b].count, buckets_[b].dtype});
  }
  ready_.assign(num_tensors, false);
  pending_.clear();
  for (const auto& b : buckets_) pending_.push_back(b.tensors.size());
  next_launch_ = 0;
}

void Engine::mark_ready(std::size_t index) {
  std::lock_guard lock(mu_);
  if (index >= bucket_of_.size() || bucket_of_[index] < 0) {
    throw InvalidArgument(fmt::format("tensor {} is not in any bucket", index));
  }
  if (ready_[index]) {
    throw Error(fmt::format(
        "tensor {} was marked ready twice in one iteration; this happens when a parameter takes part in two "
        "backward passes (e.g. reentrant checkpointing) without no_sync()", index));
  }
  ready_[index] = true;
  --pending_[bucket_of_[index]];
  while (next_launch_ < buckets_.size() && pending_[next_launch_] == 0) launch(next_launch_++);
}

std::vector<std::size_t> Engine::unready_tensors() const {
  std::lock_guard lock(mu_);
  std::vector<std::size_t> out;
  for (std::size_t t = 0; t < ready_.size(); ++t) {
    if (bucket_of_[t] >= 0 && !ready_[t]) out.push_back(t);
  }
  return out;
}

void Engine::launch(std::size_t b) {
  const BucketSpec& spec = buckets_[b];
  const BucketView view{static_cast<int>(b), spec.data, spec.count, spec.dtype};
  const Tag tag = tags::kEngineBase + (op_seq_++ % tags::kSpan);
  const std::size_t ticket = watchdog_->add(fmt::format(
      "{} on bucket {} ({} x {}, step {})", algorithm_->spec(), b, spec.count, dtype_name(spec.dtype), step_));
  const std::size_t lanes = algorithm_->buckets_may_overlap() ? lanes_.size() : 1;
  lanes_[b % lanes]->submit(
      [comm = comm_, algorithm = algorithm_, watchdog = watchdog_, owner = spec.owner, view, tag, ticket,
       step = step_] {
        watchdog->started(ticket);
        std::exception_ptr error;
        try {
          StepContext ctx{*comm, step, tag};
          algorithm->on_bucket_ready(view, ctx);
        } catch (...) {
          error = std::current_exception();
        }
        watchdog->finished(ticket, error);
      },
      [watchdog = watchdog_, ticket, b] {
        watchdog->finished(ticket, std::make_exception_ptr(Error(fmt::format(
                                       "bucket {}: the engine was destroyed before its operation ran", b))));
      });
}

void Engine::wait_all() {
  {
    std::lock_guard lock(mu_);
    if (next_launch_ != buckets_.size()) {
      throw Error(fmt::format("wait_all: {} of {} buckets were never ready (tensors without gradients)",
                              buckets_.size() - next_launch_, buckets_.size()));
    }
  }
  watchdog_->wait_all(timeout_);
  algorithm_->post_backward_hook(step_);
  std::lock_guard lock(mu_);
  ready_.assign(ready_.size(), false);
  for (std::size_t b = 0; b < buckets_.size(); ++b) pending_[b] = buckets_[b].tensors.size();
  next_launch_ = 0;
}

void Engine::forward_pre_hook() { algorithm_->forward_pre_hook(step_); }

void Engine::post_optimizer_step_hook() {
  algorithm_->post_optimizer_step_hook(step_);
  ++step_;
}

}  // namespace bagua
