// The bucket engine: knows which tensors form which flat bucket of each
// role, counts ready gradients as autograd produces them, and hands each
// complete gradient bucket to the algorithm on the communication thread, in
// bucket order on every rank. It calls the algorithm's other hooks with the
// same context (communicator, step, tags, buckets, a way to launch work),
// and starts and stops the algorithm's own thread.
#pragma once

#include <array>
#include <memory>
#include <mutex>
#include <vector>

#include "algorithms/algorithm.hpp"
#include "comm/comm_thread.hpp"
#include "comm/communicator.hpp"
#include "comm/job_request.hpp"
#include "comm/tag_source.hpp"
#include "engine/device_stage.hpp"
#include "engine/watchdog.hpp"

namespace bagua {

struct BucketSpec {
  void* data = nullptr;  // flat buffer
  std::size_t count = 0;
  DType dtype = DType::F32;
  std::vector<std::size_t> tensors;  // indices of the tensors laid out in it
  // Keeps `data` (and `companion`) alive while an operation on it runs: a
  // job stuck past the engine's destruction still writes into valid memory.
  // May be null when the caller guarantees the lifetime (tests).
  std::shared_ptr<void> owner;
  float* companion = nullptr;  // count fp32 values, or null (BucketView)
  // Where the tensors live when that is not the host (a GPU): the engine
  // then stages the bucket through `data`, its host buffer, with the
  // engine's DeviceStage: the gradients are copied out once autograd's
  // queue has written them, the algorithm runs on `data` exactly as for a
  // host bucket, and the result is copied back before the optimizer's
  // queue reads it. Null: `data` is where the tensors live.
  void* device = nullptr;
};

class Engine {
 public:
  // `lanes` communication threads; bucket b always runs on lane b % lanes,
  // so each lane sees the same sequence of operations on every rank, while
  // latency-bound operations of different buckets overlap. Algorithms whose
  // buckets must not overlap (Algorithm::buckets_may_overlap) use lane 0.
  // The engine should own its transport (see bagua_ravnest/backend.py's
  // private_backend): operations of two engines on one transport could be
  // issued in different orders on different ranks.
  Engine(CommunicatorPtr comm, std::shared_ptr<Algorithm> algorithm, std::chrono::milliseconds timeout,
         int lanes = 2);
  // Stops the algorithm's thread (within the timeout).
  ~Engine();

  // The roles the algorithm wants buckets of, and its plan for one (DDP's
  // rule unless it has its own).
  std::vector<BucketRole> bucket_roles() const;
  std::vector<std::vector<std::size_t>> plan(BucketRole role, const std::vector<TensorInfo>& tensors,
                                             const BucketingOptions& options);
  void set_buckets(BucketRole role, std::vector<BucketSpec> buckets, std::size_t num_tensors);
  void set_buckets(std::vector<BucketSpec> buckets, std::size_t num_tensors) {
    set_buckets(BucketRole::Gradients, std::move(buckets), num_tensors);
  }
  // The stage of the buckets that have a device buffer (BucketSpec::device);
  // set before such buckets. Gradient buckets only in this version.
  void set_stage(DeviceStagePtr stage);
  bool staged() const { return stage_ != nullptr; }

  // Once the buckets are set: the algorithm may start its thread.
  void start();
  // Stops the algorithm's thread; idempotent (the destructor calls it too).
  void stop();

  // From autograd: tensor `index` has its gradient. Launches every bucket
  // that is complete and whose predecessors have all been launched. For a
  // staged bucket, `producer` is the device queue that wrote the gradient
  // (the copy out waits for the point it has reached now).
  void mark_ready(std::size_t index, std::uintptr_t producer = 0);
  // Tensors not marked ready in the current iteration: the caller names
  // them when backward ended without their gradients.
  std::vector<std::size_t> unready_tensors() const;

  // End of backward: waits for all launched operations (bounded by the
  // timeout), orders the device queue `consumer` after every staged
  // bucket's copy back (without blocking the host where the device can),
  // runs the post-backward hook, then resets the per-iteration state.
  void wait_all(std::uintptr_t consumer = 0);

  // Waits (within the timeout) for every launched operation, without the
  // end-of-backward hook: before the algorithm's state is read or replaced,
  // work launched after the optimizer step must have landed.
  void drain();

  void forward_pre_hook();
  void post_optimizer_step_hook();
  // Whether the buckets must be rebuilt (asked after each optimizer step).
  bool need_reset();
  // Around the wrapper's setting every rank's weights to their mean
  // (Algorithm::before_averaging_replicas, after what was in flight, and
  // Algorithm::replicas_averaged).
  void before_averaging_replicas();
  void replicas_averaged();
  // One of the algorithm's named controls; an unknown name lists them.
  void control(const std::string& name);
  std::vector<std::string> controls() const { return algorithm_->controls(); }
  bool fills_companions() const { return algorithm_->fills_companions(); }

  // The algorithm as the wrapper sees it: every call from the wrapper into
  // the algorithm goes through the engine.
  std::string spec() const { return algorithm_->spec(); }
  std::string plan_description() const { return algorithm_->plan_description(); }
  bool depends_on_step() const { return algorithm_->depends_on_step(); }
  bool moves_weights_in_background() const { return algorithm_->moves_weights_in_background(); }
  void hold_weights(WeightsHold hold) { algorithm_->hold_weights(hold); }
  void release_weights() { algorithm_->release_weights(); }
  AlgorithmState state_dict() const { return algorithm_->state_dict(); }
  void load_state_dict(const AlgorithmState& state) { algorithm_->load_state_dict(state); }

  std::uint64_t step() const { return step_; }
  void set_step(std::uint64_t step) { step_ = step; }

  // For tests of an algorithm driven through an engine.
  Algorithm& algorithm() { return *algorithm_; }

 private:
  void launch(std::size_t bucket, std::uintptr_t producer);  // with mu_ held
  // fn(bucket, point) for each gradient bucket's last copy back, outside
  // the landings' lock.
  void for_each_landing(const std::function<void(std::size_t, const StagePointPtr&)>& fn);
  void launch_job(std::string label, std::function<void(StepContext&)> job);
  RequestPtr launch_background(std::string label, std::function<void(StepContext&)> job);
  // Runs `hook` with a context of its own tags, outside mu_.
  void call_hook(const std::function<void(StepContext&)>& hook);

  CommunicatorPtr comm_;
  std::shared_ptr<Algorithm> algorithm_;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<Watchdog> watchdog_;

  using ViewSet = std::array<std::vector<BucketView>, kBucketRoles>;
  // A context over a snapshot of the views (which the caller keeps alive);
  // `engine` null for one without launch and background.
  static StepContext context_of(Communicator& comm, const ViewSet& views, TagBlock tags, std::uint64_t step,
                                Engine* engine = nullptr);

  mutable std::mutex mu_;
  std::vector<BucketSpec> buckets_;  // gradients: launched by mark_ready
  std::array<std::vector<BucketSpec>, kBucketRoles> other_buckets_;  // weights and buffers
  // A snapshot that jobs hold on to, replaced (never changed) by set_buckets.
  std::shared_ptr<const ViewSet> views_;
  std::vector<int> bucket_of_;     // tensor -> gradient bucket
  std::vector<bool> ready_;        // tensor -> marked this iteration
  std::vector<std::size_t> pending_;  // bucket -> tensors not yet ready
  std::size_t next_launch_ = 0;
  DeviceStagePtr stage_;
  // Per gradient bucket: the end of its last copy back (null when none).
  // Written by the lane that ran the bucket, read after the watchdog said
  // it finished; its own mutex, since lanes write while mu_ is not held.
  struct Landings {
    std::mutex mu;
    std::vector<StagePointPtr> points;
  };
  std::shared_ptr<Landings> landings_ = std::make_shared<Landings>();
  TagSource tags_;
  std::uint64_t step_ = 0;
  bool started_ = false;
  bool stopped_ = false;

  // Last members: destroyed first, so no job outlives the state it uses.
  std::vector<std::unique_ptr<CommThread>> lanes_;
  std::unique_ptr<CommThread> background_;  // StepContext::background's work
};

}  // namespace bagua
