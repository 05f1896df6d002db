// The Algorithm contract, second edition (docs/engine.md). The engine calls
// these hooks, in this order, each training step:
//   forward_pre_hook -> (backward) on_bucket_ready per gradient bucket, on
//   the communication threads, launched in bucket order -> post_backward_hook
//   (after every launched operation finished) -> post_optimizer_step_hook.
// bucket_roles, tensors_to_buckets and init_operations run when buckets are
// (re)built: at start, and whenever need_reset() says so after a step.
// start runs once the first buckets are set; stop when the engine goes.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "comm/communicator.hpp"
#include "comm/tag_source.hpp"

namespace bagua {

// What a bucket holds. Gradients: views of each parameter's .grad, ready
// when autograd has produced them all. Weights: views of each parameter's
// data, which the algorithm reads and writes in its hooks (before forward,
// after backward, after the optimizer step) or on its own thread. Buffers:
// views of the module's floating-point buffers (BatchNorm's running
// statistics), for algorithms that average them. Each role numbers its
// tensors from 0 in registration order.
enum class BucketRole { Gradients, Weights, Buffers };
constexpr std::size_t kBucketRoles = 3;

const char* role_name(BucketRole role);

// What the engine knows of a registered tensor.
struct TensorInfo {
  std::size_t numel = 0;
  DType dtype = DType::F32;
};

// A bucket as an algorithm sees it: one flat buffer.
struct BucketView {
  int index = 0;  // within its role
  BucketRole role = BucketRole::Gradients;
  void* data = nullptr;
  std::size_t count = 0;
  DType dtype = DType::F32;
  // Gradients only, for an algorithm that fills_companions(): count fp32
  // values beside the bucket that the algorithm fills for its optimizer
  // (qadam: the variance its exchange's rounding added to each value).
  float* companion = nullptr;
};

struct BucketingOptions {
  std::size_t cap_bytes = 25u << 20;
  std::size_t first_cap_bytes = 1u << 20;
};

// What every hook gets.
struct StepContext {
  Communicator& comm;
  std::uint64_t step;  // completed optimizer steps so far
  // Unique to this operation and equal on every rank.
  TagBlock tags;
  // Every bucket of each role (empty for a role the algorithm did not ask for).
  std::span<const BucketView> gradients;
  std::span<const BucketView> weights;
  std::span<const BucketView> buffers;
  // Runs `job` on the engine's first communication lane, after what was
  // launched before it, with a context of its own (its own tags); the end
  // of backward waits for it (within the timeout) and raises its error,
  // named by `label`. Empty inside on_bucket_ready.
  std::function<void(std::string label, std::function<void(StepContext&)> job)> launch;
  // Like launch, but on a thread of its own and not waited for by the end
  // of backward: the algorithm waits on the returned request when it needs
  // the result (a period later, say), and gets the job's error there.
  // Only for work whose messages are told apart by its tags. Empty inside
  // on_bucket_ready.
  std::function<RequestPtr(std::string label, std::function<void(StepContext&)> job)> background;
};

// What an algorithm's own thread gets: a communicator that outlives the
// algorithm's use of it, and tags of a range no engine operation uses.
struct ThreadContext {
  CommunicatorPtr comm;
  TagSource tags;
  // The engine's timeout: what stop() is allowed for the join.
  std::chrono::milliseconds timeout;
};

// One bucket per dtype, tensors in registration order: for algorithms that
// move all weights at once (one exchange per step, whatever the model).
std::vector<std::vector<std::size_t>> one_bucket_per_dtype(const std::vector<TensorInfo>& tensors);

// Why the wrapper holds the weights (Algorithm::hold_weights).
enum class WeightsHold { Read, Replace };

// Named byte blobs: an algorithm's state that must survive a checkpoint.
using AlgorithmState = std::map<std::string, std::vector<std::uint8_t>>;

class Algorithm {
 public:
  virtual ~Algorithm() = default;

  // Canonical "name:key=value,..." form; equal on all ranks of one job.
  virtual std::string spec() const = 0;
  // A plan the algorithm made at start-up (rings, shares, stages), in words
  // for the user; empty when it has none.
  virtual std::string plan_description() const { return {}; }

  // Which buckets the wrapper must build, asked again after need_reset().
  virtual std::vector<BucketRole> bucket_roles() const { return {BucketRole::Gradients}; }
  // Groups tensors (given in registration order) into buckets of `role`:
  // tensor indices per bucket. nullopt (the default) lets the engine apply
  // DDP's rule (engine/bucket_plan.hpp).
  virtual std::optional<std::vector<std::vector<std::size_t>>> tensors_to_buckets(
      BucketRole /*role*/, const std::vector<TensorInfo>& /*tensors*/, const BucketingOptions& /*options*/) {
    return std::nullopt;
  }
  virtual void init_operations(const BucketView& /*bucket*/, StepContext& /*ctx*/) {}
  // Whether it fills a companion beside each gradient bucket (BucketView)
  // for its optimizer: the wrapper then allocates them and hands the
  // optimizer each parameter's part.
  virtual bool fills_companions() const { return false; }

  virtual void forward_pre_hook(StepContext& /*ctx*/) {}
  // Runs on a communication thread once every tensor of the gradient
  // `bucket` is ready. Different buckets may run at the same time on
  // different threads; one bucket's calls never overlap.
  virtual void on_bucket_ready(const BucketView& /*bucket*/, StepContext& /*ctx*/) {}
  virtual void post_backward_hook(StepContext& /*ctx*/) {}
  // Runs with nothing launched still in flight.
  virtual void post_optimizer_step_hook(StepContext& /*ctx*/) {}
  // Asked after each post_optimizer_step_hook (ctx.step is the step just
  // completed + 1): true makes the wrapper rebuild every bucket.
  virtual bool need_reset(std::uint64_t /*step*/) { return false; }

  // Whether different buckets' operations may run at the same time. Safe
  // only when each operation's messages are told apart by ctx.tags alone;
  // collectives of an inner backend are matched by issue order instead, so
  // they must run one at a time.
  virtual bool buckets_may_overlap() const { return false; }

  // An algorithm that runs a thread of its own starts it here or later, and
  // ends it in stop, which must return within `deadline` (a thread stuck
  // in a wait is left to that wait's own timeout, detached, never joined
  // forever). stop is idempotent.
  virtual void start(ThreadContext /*ctx*/) {}
  virtual void stop(std::chrono::milliseconds /*deadline*/) {}

  // Named controls the wrapper exposes (DistributedDataParallel.
  // algorithm_control): collective, every rank calls them in the same order.
  virtual std::vector<std::string> controls() const { return {}; }
  virtual void control(const std::string& /*name*/, StepContext& /*ctx*/) {}

  // For an algorithm that changes the weights on its own thread, outside
  // the training step: the wrapper holds the weights while a checkpoint
  // copies them (Read) or loads new ones into them (Replace), then releases
  // them. The algorithm keeps its thread's hands off meanwhile, and after a
  // Replace drops any change computed from the old weights.
  virtual bool moves_weights_in_background() const { return false; }
  virtual void hold_weights(WeightsHold /*hold*/) {}
  virtual void release_weights() {}

  // DistributedDataParallel.average_replicas sets every rank's weights (and
  // buffers) to their mean over the ranks, collectively. Before, with the
  // launched work drained: an algorithm whose thread moves the weights
  // stops it on every rank (collectively: a round one rank joins with the
  // old weights and another with the mean would pull them apart). After:
  // state derived from each rank's own weights (copies of the neighbours',
  // a snapshot awaiting its average, a compression residual) starts again
  // from the common weights, the same on every rank, and the thread goes on.
  virtual void before_averaging_replicas(StepContext& /*ctx*/) {}
  virtual void replicas_averaged(StepContext& /*ctx*/) {}

  // Whether what it does depends on the step count (a period, a peer
  // schedule): the checkpoint then carries the step even when the state
  // below is empty, so that a resumed run continues where it stopped.
  virtual bool depends_on_step() const { return false; }
  virtual AlgorithmState state_dict() const { return {}; }
  virtual void load_state_dict(const AlgorithmState& /*state*/) {}
};

// Base of the algorithms that move all the weights at once (gossip, model
// averaging): buckets of weights only, one per dtype.
class WholeModelAlgorithm : public Algorithm {
 public:
  std::vector<BucketRole> bucket_roles() const override { return {BucketRole::Weights}; }
  std::optional<std::vector<std::vector<std::size_t>>> tensors_to_buckets(
      BucketRole /*role*/, const std::vector<TensorInfo>& tensors, const BucketingOptions& /*options*/) override {
    return one_bucket_per_dtype(tensors);
  }
};

}  // namespace bagua
