#include "algorithms/async_model_average/async_model_average.hpp"

#include <fmt/format.h>

#include <cstring>

#include "algorithms/registry.hpp"
#include "core/error.hpp"

namespace bagua {

AsyncModelAverage::AsyncModelAverage(AsyncModelAverageOptions options, int world_size)
    : options_(options),
      world_size_(world_size),
      warmup_(GradientAllreduceOptions{}, world_size, std::nullopt),
      averaging_(options.warmup_steps == 0) {
  try {
    check_peer_mode(options_.mode, world_size);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(fmt::format("async_model_average: {}", e.what()));
  }
}

AsyncModelAverage::~AsyncModelAverage() = default;

std::string AsyncModelAverage::spec() const {
  return fmt::format("async_model_average:max_lag={},peer_selection_mode={},sync_interval_ms={},warmup_steps={}",
                     options_.max_lag, peer_mode_name(options_.mode), options_.sync_interval_ms,
                     options_.warmup_steps);
}

std::vector<BucketRole> AsyncModelAverage::bucket_roles() const {
  if (averaging_) return {BucketRole::Weights};
  return {BucketRole::Gradients};
}

std::optional<std::vector<std::vector<std::size_t>>> AsyncModelAverage::tensors_to_buckets(
    BucketRole role, const std::vector<TensorInfo>& tensors, const BucketingOptions& /*options*/) {
  if (role == BucketRole::Weights) return one_bucket_per_dtype(tensors);
  return std::nullopt;  // the warm-up's gradients: DDP's rule
}

void AsyncModelAverage::init_operations(const BucketView& b, StepContext& /*ctx*/) {
  if (b.role != BucketRole::Weights) return;
  const auto i = static_cast<std::size_t>(b.index);
  if (weights_.size() <= i) weights_.resize(i + 1);
  weights_[i] = b;
}

void AsyncModelAverage::start(ThreadContext ctx) {
  timeout_ = ctx.timeout;
  if (options_.max_lag > 0 && std::chrono::milliseconds(options_.sync_interval_ms) >= timeout_) {
    // A wait for the next round would outlast the timeout every time.
    throw InvalidArgument(fmt::format(
        "{}: sync_interval_ms must be shorter than the wrapper's timeout ({} ms) when max_lag waits for rounds",
        spec(), timeout_.count()));
  }
  averager_ = std::make_unique<BackgroundAverager>(
      ctx, AveragerConfig{options_.mode, std::chrono::milliseconds(options_.sync_interval_ms), world_size_});
  if (loaded_round_ != 0) averager_->set_round(loaded_round_);
}

void AsyncModelAverage::stop(std::chrono::milliseconds deadline) {
  if (averager_) averager_->stop(deadline);
}

void AsyncModelAverage::forward_pre_hook(StepContext& ctx) {
  if (!averaging_ || !averager_) return;
  // A failed round is reported here or at the step, never swallowed.
  averager_->rethrow_failure();
  averager_->set_training_step(ctx.step);
  // Before the hold: the round it waits for must be free to land. A second
  // forward of the same step (accumulation) already holds it, and the first
  // one's wait covered this step.
  if (options_.max_lag > 0 && !averager_->lock().training_holds()) {
    averager_->wait_for_lag(ctx.step, options_.max_lag, timeout_);
  }
  averager_->lock().hold_for_training(timeout_);
  if (!averager_->begun()) averager_->begin(weights_);
}

void AsyncModelAverage::on_bucket_ready(const BucketView& bucket, StepContext& ctx) {
  warmup_.on_bucket_ready(bucket, ctx);
}

void AsyncModelAverage::post_optimizer_step_hook(StepContext& ctx) {
  if (!averager_) return;
  // Before the release: a round's snapshot then sees this step counted.
  averager_->set_training_step(ctx.step + 1);
  averager_->lock().release_training();
  averager_->rethrow_failure();
}

bool AsyncModelAverage::need_reset(std::uint64_t step) {
  if (averaging_ || step < options_.warmup_steps) return false;
  averaging_ = true;  // from gradient buckets to weights buckets
  return true;
}

void AsyncModelAverage::control(const std::string& name, StepContext& /*ctx*/) {
  if (!averager_) throw Error("async_model_average: the wrapper has not started its thread");
  set_paused(name == "abort");
  aborted_ = name == "abort";
}

void AsyncModelAverage::set_paused(bool paused) {
  // Between a forward and its optimizer step the round in flight would wait
  // for the training hold: let it land, then hold again.
  ModelLock& lock = averager_->lock();
  const bool held = lock.training_holds();
  if (held) lock.release_training();
  averager_->set_paused(paused, timeout_);
  if (held) lock.hold_for_training(timeout_);
}

void AsyncModelAverage::before_averaging_replicas(StepContext& /*ctx*/) {
  // Once every rank has agreed to pause, no round is in flight anywhere.
  if (averager_) set_paused(true);
}

void AsyncModelAverage::replicas_averaged(StepContext& /*ctx*/) {
  if (!averager_) return;
  averager_->weights_replaced();  // max_lag counts from the averaged weights
  if (!aborted_) set_paused(false);
}

void AsyncModelAverage::hold_weights(WeightsHold hold) {
  if (!averager_) return;
  averager_->lock().hold_for_checkpoint(timeout_);
  if (hold == WeightsHold::Replace) averager_->weights_replaced();
}

void AsyncModelAverage::release_weights() {
  if (averager_) averager_->lock().release_checkpoint();
}

AlgorithmState AsyncModelAverage::state_dict() const {
  const std::uint64_t round = averager_ ? averager_->round() : loaded_round_;
  std::vector<std::uint8_t> bytes(sizeof(round));
  std::memcpy(bytes.data(), &round, sizeof(round));
  return {{"round", bytes}};
}

void AsyncModelAverage::load_state_dict(const AlgorithmState& state) {
  const auto it = state.find("round");
  if (it == state.end() || it->second.size() != sizeof(std::uint64_t)) {
    throw InvalidArgument("async_model_average: the checkpoint has no valid 'round' (8 bytes)");
  }
  std::uint64_t round = 0;
  std::memcpy(&round, it->second.data(), sizeof(round));
  loaded_round_ = round;
  if (averager_) averager_->set_round(round);
}

void register_async_model_average(AlgorithmRegistry& registry) {
  registry.add(
      "async_model_average",
      AlgorithmEntry{
          "training never waits for the network: a background thread averages a snapshot of the weights with "
          "peers every sync_interval_ms and applies (average - snapshot) between optimizer steps",
          {{"sync_interval_ms", "milliseconds from the start of one background round to the next (default 500)"},
           {"warmup_steps", "steps of gradient_allreduce before the background averaging starts (default 0)"},
           {"peer_selection_mode", "all (default: the mean of every rank), shift_one (one partner per round, even "
                                   "world size) or ring (both neighbours, weight 1/3 each)"},
           {"max_lag", "bounded staleness: a forward waits while the weights were last averaged from a snapshot "
                       "more than N optimizer steps old (default 0: never waits)"}},
          [](const AlgorithmOptions& o, const WorldInfo& world) -> std::unique_ptr<Algorithm> {
            AsyncModelAverageOptions opts;
            opts.sync_interval_ms = option_count(o, "sync_interval_ms", opts.sync_interval_ms, /*minimum=*/0);
            opts.warmup_steps = option_count(o, "warmup_steps", opts.warmup_steps, /*minimum=*/0);
            opts.mode = peer_mode_from_name(option_choice(o, "peer_selection_mode", peer_mode_names(), "all"));
            opts.max_lag = option_count(o, "max_lag", opts.max_lag, /*minimum=*/0);
            return std::make_unique<AsyncModelAverage>(opts, world.size);
          },
          /*optimizer=*/"", /*needs_optimizer=*/true});
}

}  // namespace bagua
