#include "engine/engine.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "comm/tags.hpp"
#include "core/error.hpp"
#include "engine/bucket_plan.hpp"

namespace bagua {
namespace {

std::vector<BucketView> views_of(BucketRole role, const std::vector<BucketSpec>& buckets) {
  std::vector<BucketView> out;
  for (std::size_t b = 0; b < buckets.size(); ++b) {
    out.push_back(
        {static_cast<int>(b), role, buckets[b].data, buckets[b].count, buckets[b].dtype, buckets[b].companion});
  }
  return out;
}

// Runs a launched operation under its watchdog ticket: started, then
// finished with its error, if any.
void run_tracked(Watchdog& watchdog, std::size_t ticket, const std::function<void()>& body) {
  watchdog.started(ticket);
  std::exception_ptr error;
  try {
    body();
  } catch (...) {
    error = std::current_exception();
  }
  watchdog.finished(ticket, error);
}

}  // namespace

Engine::Engine(CommunicatorPtr comm, std::shared_ptr<Algorithm> algorithm, std::chrono::milliseconds timeout,
               int lanes)
    : comm_(std::move(comm)),
      algorithm_(std::move(algorithm)),
      timeout_(timeout),
      views_(std::make_shared<ViewSet>()),
      tags_(tags::kEngineBase, tags::kSpan, tags::kPerOperation) {
  if (!comm_ || !algorithm_) throw InvalidArgument("Engine needs a communicator and an algorithm");
  if (lanes < 1 || lanes > 16) throw InvalidArgument(fmt::format("lanes must be in [1, 16], got {}", lanes));
  watchdog_ = std::make_shared<Watchdog>(comm_->rank());
  for (int i = 0; i < lanes; ++i) lanes_.push_back(std::make_unique<CommThread>());
  background_ = std::make_unique<CommThread>();
}

Engine::~Engine() {
  try {
    stop();
  } catch (...) {
    // A destructor cannot report; stop() bounds the wait either way.
  }
}

std::vector<BucketRole> Engine::bucket_roles() const { return algorithm_->bucket_roles(); }

std::vector<std::vector<std::size_t>> Engine::plan(BucketRole role, const std::vector<TensorInfo>& tensors,
                                                   const BucketingOptions& options) {
  auto own = algorithm_->tensors_to_buckets(role, tensors, options);
  if (!own) return plan_buckets(tensors, options);
  // An algorithm's plan is checked like a user's input: each tensor once,
  // one dtype per bucket.
  std::vector<bool> seen(tensors.size(), false);
  for (const auto& bucket : *own) {
    if (bucket.empty()) throw InvalidArgument(fmt::format("{}: its {} plan has an empty bucket", algorithm_->spec(), role_name(role)));
    for (std::size_t t : bucket) {
      if (t >= tensors.size() || seen[t] || tensors[t].dtype != tensors[bucket.front()].dtype) {
        throw InvalidArgument(fmt::format("{}: its {} plan places tensor {} wrongly (out of range, twice, or with "
                                          "another dtype)", algorithm_->spec(), role_name(role), t));
      }
      seen[t] = true;
    }
  }
  if (std::find(seen.begin(), seen.end(), false) != seen.end()) {
    throw InvalidArgument(fmt::format("{}: its {} plan leaves tensors out", algorithm_->spec(), role_name(role)));
  }
  return *own;
}

void Engine::set_stage(DeviceStagePtr stage) {
  std::lock_guard lock(mu_);
  if (!buckets_.empty() || started_) throw Error("set_stage must come before the buckets and start()");
  stage_ = std::move(stage);
}

void Engine::for_each_landing(const std::function<void(std::size_t, const StagePointPtr&)>& fn) {
  std::vector<StagePointPtr> points;
  {
    std::lock_guard lock(landings_->mu);
    points = landings_->points;  // a copy: the waits run without the lock
  }
  for (std::size_t b = 0; b < points.size(); ++b) {
    if (points[b]) fn(b, points[b]);
  }
}

void Engine::set_buckets(BucketRole role, std::vector<BucketSpec> buckets, std::size_t num_tensors) {
  for (const auto& b : buckets) {
    if (!b.device) continue;
    if (role != BucketRole::Gradients) {
      throw InvalidArgument(fmt::format("{}: {} buckets on a device are not staged in this version (gradient "
                                        "buckets are)", algorithm_->spec(), role_name(role)));
    }
    if (!stage_) throw InvalidArgument("a bucket has a device buffer but the engine has no stage (set_stage)");
    if (b.companion) {
      throw InvalidArgument(fmt::format("{}: its companions (for its optimizer) are host memory; a bucket on a "
                                        "device cannot have one in this version", algorithm_->spec()));
    }
  }
  // A copy back into the buffers being replaced must land first (its host
  // buffer may be handed out again as soon as the caller drops it).
  if (role == BucketRole::Gradients && stage_) {
    for_each_landing([&](std::size_t b, const StagePointPtr& point) {
      wait_for_point(*stage_, point, timeout_, fmt::format("bucket {}", b));
    });
  }
  std::unique_lock lock(mu_);
  if (!watchdog_->idle()) throw Error("set_buckets called while bucket operations are in flight");
  std::vector<int> owner(num_tensors, -1);
  for (std::size_t b = 0; b < buckets.size(); ++b) {
    for (std::size_t t : buckets[b].tensors) {
      if (t >= num_tensors) throw InvalidArgument(fmt::format("bucket {} names tensor {} of {}", b, t, num_tensors));
      if (owner[t] != -1) throw InvalidArgument(fmt::format("tensor {} is in two buckets", t));
      owner[t] = static_cast<int>(b);
    }
  }
  auto views = std::make_shared<ViewSet>(*views_);
  (*views)[static_cast<std::size_t>(role)] = views_of(role, buckets);
  views_ = views;
  if (role != BucketRole::Gradients) {
    other_buckets_[static_cast<std::size_t>(role)] = std::move(buckets);
  } else {
    buckets_ = std::move(buckets);
    bucket_of_ = std::move(owner);
    ready_.assign(num_tensors, false);
    pending_.clear();
    for (const auto& b : buckets_) pending_.push_back(b.tensors.size());
    next_launch_ = 0;
    std::lock_guard landing(landings_->mu);
    landings_->points.assign(buckets_.size(), nullptr);
  }
  lock.unlock();
  for (const auto& view : (*views)[static_cast<std::size_t>(role)]) {
    call_hook([&](StepContext& ctx) { algorithm_->init_operations(view, ctx); });
  }
}

void Engine::start() {
  std::lock_guard lock(mu_);
  if (started_) return;
  started_ = true;
  algorithm_->start(ThreadContext{comm_, TagSource(tags::kAlgorithmThreadBase, tags::kSpan, tags::kPerOperation),
                                  timeout_});
}

void Engine::stop() {
  {
    std::lock_guard lock(mu_);
    if (!started_ || stopped_) return;
    stopped_ = true;
  }
  algorithm_->stop(timeout_);
}

void Engine::mark_ready(std::size_t index, std::uintptr_t producer) {
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
  while (next_launch_ < buckets_.size() && pending_[next_launch_] == 0) launch(next_launch_++, producer);
}

std::vector<std::size_t> Engine::unready_tensors() const {
  std::lock_guard lock(mu_);
  std::vector<std::size_t> out;
  for (std::size_t t = 0; t < ready_.size(); ++t) {
    if (bucket_of_[t] >= 0 && !ready_[t]) out.push_back(t);
  }
  return out;
}

void Engine::launch(std::size_t b, std::uintptr_t producer) {
  const BucketSpec& spec = buckets_[b];
  const BucketView view = (*views_)[0][b];
  const TagBlock tags = tags_.next();
  const std::size_t ticket = watchdog_->add(fmt::format(
      "{} on bucket {} ({} x {}, step {})", algorithm_->spec(), b, spec.count, dtype_name(spec.dtype), step_));
  const std::size_t lanes = algorithm_->buckets_may_overlap() ? lanes_.size() : 1;
  // A staged bucket: its copy out is enqueued now, behind the gradients
  // the producer has written; the lane waits for it before the exchange
  // reads the host buffer, and enqueues the copy back once it is done.
  StagePointPtr copied;
  DeviceStagePtr stage = spec.device ? stage_ : nullptr;
  const std::size_t bytes = spec.count * dtype_size(spec.dtype);
  if (stage) copied = stage->copy_out(spec.device, spec.data, bytes, stage->record(producer), spec.owner);
  lanes_[b % lanes]->submit(
      [comm = comm_, algorithm = algorithm_, watchdog = watchdog_, owner = spec.owner, views = views_, view,
       tags, ticket, step = step_, stage, copied, device = spec.device, bytes, landings = landings_,
       timeout = timeout_, b] {
        run_tracked(*watchdog, ticket, [&] {
          if (stage) wait_for_point(*stage, copied, timeout, fmt::format("bucket {} (to host)", b));
          StepContext ctx = context_of(*comm, *views, tags, step);
          algorithm->on_bucket_ready(view, ctx);
          if (stage) {
            StagePointPtr landed = stage->copy_in(view.data, device, bytes, owner);
            std::lock_guard lock(landings->mu);
            if (b < landings->points.size()) landings->points[b] = std::move(landed);
          }
        });
      },
      [watchdog = watchdog_, ticket, b] {
        watchdog->finished(ticket, std::make_exception_ptr(Error(fmt::format(
                                       "bucket {}: the engine was destroyed before its operation ran", b))));
      });
}

void Engine::launch_job(std::string label, std::function<void(StepContext&)> job) {
  std::lock_guard lock(mu_);
  const TagBlock tags = tags_.next();
  const std::size_t ticket = watchdog_->add(fmt::format("{}: {} (step {})", algorithm_->spec(), label, step_));
  // The job keeps the algorithm (it usually captured `this` of it) and
  // every bucket (it may touch any) alive.
  std::vector<std::shared_ptr<void>> owners;
  for (const auto& b : buckets_) owners.push_back(b.owner);
  for (const auto& set : other_buckets_) {
    for (const auto& b : set) owners.push_back(b.owner);
  }
  lanes_[0]->submit(
      [comm = comm_, algorithm = algorithm_, watchdog = watchdog_, owners = std::move(owners), views = views_,
       job = std::move(job), tags, ticket, step = step_] {
        run_tracked(*watchdog, ticket, [&] {
          StepContext ctx = context_of(*comm, *views, tags, step);
          job(ctx);
        });
      },
      [watchdog = watchdog_, ticket, label] {
        watchdog->finished(ticket, std::make_exception_ptr(Error(fmt::format(
                                       "{}: the engine was destroyed before it ran", label))));
      });
}

StepContext Engine::context_of(Communicator& comm, const ViewSet& views, TagBlock tags, std::uint64_t step,
                               Engine* engine) {
  StepContext ctx{comm, step, tags, views[0], views[1], views[2], {}, {}};
  if (engine) {
    ctx.launch = [engine](std::string label, std::function<void(StepContext&)> job) {
      engine->launch_job(std::move(label), std::move(job));
    };
    ctx.background = [engine](std::string label, std::function<void(StepContext&)> job) {
      return engine->launch_background(std::move(label), std::move(job));
    };
  }
  return ctx;
}

RequestPtr Engine::launch_background(std::string label, std::function<void(StepContext&)> job) {
  std::lock_guard lock(mu_);
  const TagBlock tags = tags_.next();
  auto request = std::make_shared<JobRequest>(fmt::format("rank {}: {}: {} (step {})", comm_->rank(),
                                                          algorithm_->spec(), label, step_));
  std::vector<std::shared_ptr<void>> owners;
  for (const auto& set : other_buckets_) {
    for (const auto& b : set) owners.push_back(b.owner);
  }
  background_->submit(
      [comm = comm_, algorithm = algorithm_, owners = std::move(owners), views = views_, job = std::move(job), tags,
       request, step = step_] {
        std::exception_ptr error;
        try {
          StepContext ctx = context_of(*comm, *views, tags, step);
          job(ctx);
        } catch (...) {
          error = std::current_exception();
        }
        request->finish(error);
      },
      [request, label] {
        request->finish(std::make_exception_ptr(Error(fmt::format("{}: the engine was destroyed before it ran", label))));
      });
  return request;
}

void Engine::call_hook(const std::function<void(StepContext&)>& hook) {
  std::shared_ptr<const ViewSet> views;
  TagBlock tags(0, 0);
  {
    std::lock_guard lock(mu_);
    views = views_;
    tags = tags_.next();
  }
  StepContext ctx = context_of(*comm_, *views, tags, step_, this);
  hook(ctx);
}

void Engine::wait_all(std::uintptr_t consumer) {
  {
    std::lock_guard lock(mu_);
    if (next_launch_ != buckets_.size()) {
      throw Error(fmt::format("wait_all: {} of {} buckets were never ready (tensors without gradients)",
                              buckets_.size() - next_launch_, buckets_.size()));
    }
  }
  watchdog_->wait_all(timeout_);
  if (stage_) {
    for_each_landing([&](std::size_t b, const StagePointPtr& point) {
      stage_->order_before(point, consumer, timeout_, fmt::format("bucket {} (to device)", b));
    });
  }
  call_hook([&](StepContext& ctx) { algorithm_->post_backward_hook(ctx); });
  std::lock_guard lock(mu_);
  ready_.assign(ready_.size(), false);
  for (std::size_t b = 0; b < buckets_.size(); ++b) pending_[b] = buckets_[b].tensors.size();
  next_launch_ = 0;
}

void Engine::drain() { watchdog_->wait_all(timeout_); }

void Engine::forward_pre_hook() {
  call_hook([&](StepContext& ctx) { algorithm_->forward_pre_hook(ctx); });
}

void Engine::post_optimizer_step_hook() {
  // Usually a no-op (the end of backward waited); after a step without a
  // synchronized backward (no_sync, or two steps in a row) work launched by
  // the previous step's hook may still be using the algorithm's buffers.
  drain();
  call_hook([&](StepContext& ctx) { algorithm_->post_optimizer_step_hook(ctx); });
  ++step_;
}

bool Engine::need_reset() { return algorithm_->need_reset(step_); }

void Engine::before_averaging_replicas() {
  drain();
  call_hook([&](StepContext& ctx) { algorithm_->before_averaging_replicas(ctx); });
}

void Engine::replicas_averaged() {
  call_hook([&](StepContext& ctx) { algorithm_->replicas_averaged(ctx); });
}

void Engine::control(const std::string& name) {
  const auto names = algorithm_->controls();
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    throw InvalidArgument(fmt::format("{} has no control '{}'; its controls: {}", algorithm_->spec(), name,
                                      names.empty() ? std::string("(none)") : fmt::format("{}", fmt::join(names, ", "))));
  }
  call_hook([&](StepContext& ctx) { algorithm_->control(name, ctx); });
}

}  // namespace bagua
