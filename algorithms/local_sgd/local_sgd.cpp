#include "algorithms/local_sgd/local_sgd.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "algorithms/float_state.hpp"
#include "algorithms/registry.hpp"
#include "collectives/compressed_allreduce.hpp"
#include "collectives/ring_allreduce.hpp"
#include "core/error.hpp"

namespace bagua {
namespace {

// Tags of one synchronization: weights' buckets from 0, buffers' from here.
constexpr Tag kBufferTags = 8;

const std::vector<std::string>& codec_choices() {
  static const std::vector<std::string> names{"identity", "fp16", "bf16", "minmax_uint8", "sign1bit"};
  return names;
}

}  // namespace

LocalSgd::LocalSgd(LocalSgdOptions options, int rank, int world_size)
    : options_(std::move(options)), rank_(rank), everyone_(world_size) {
  std::iota(everyone_.begin(), everyone_.end(), 0);
  const auto& o = options_.outer;
  if (!(o.lr > 0.0)) throw InvalidArgument(fmt::format("local_sgd: outer_lr must be positive, got {}", o.lr));
  if (!(o.momentum >= 0.0 && o.momentum < 1.0)) {
    throw InvalidArgument(fmt::format("local_sgd: outer_momentum must be in [0, 1), got {}", o.momentum));
  }
  if (o.nesterov && o.momentum == 0.0) {
    throw InvalidArgument("local_sgd: nesterov=true needs outer_momentum > 0 (as torch.optim.SGD)");
  }
  if (options_.codec != "identity") codec_ = make_codec(options_.codec);
  error_feedback_ = options_.codec == "sign1bit";
  plain_ = o.is_plain_average() && !codec_;
}

std::string LocalSgd::spec() const {
  const auto& o = options_.outer;
  return fmt::format("local_sgd:codec={},nesterov={},outer_lr={},outer_momentum={},overlap={},period={}",
                     options_.codec, o.nesterov ? "true" : "false", o.lr, o.momentum,
                     options_.overlap ? "true" : "false", options_.period);
}

void LocalSgd::init_operations(const BucketView& b, StepContext& ctx) {
  const auto i = static_cast<std::size_t>(b.index);
  if (i >= kBufferTags || i >= ctx.tags.size() - kBufferTags) {
    throw InvalidArgument(fmt::format("local_sgd: too many {} buckets ({})", role_name(b.role), i + 1));
  }
  if (b.role != BucketRole::Weights) return;
  if (options_.overlap) {
    if (b.dtype != DType::F32) {
      throw InvalidArgument(fmt::format("{}: overlap=true keeps fp32 snapshots; weight bucket {} holds {}", spec(),
                                        b.index, dtype_name(b.dtype)));
    }
    if (snapshot_.size() <= i) {
      snapshot_.resize(i + 1);
      averaged_.resize(i + 1);
    }
    snapshot_[i].assign(b.count, 0.0f);
    averaged_[i].assign(b.count, 0.0f);
    pending_[0] = 0.0f;
    in_flight_.reset();
  }
  if (!keeps_x0()) return;
  if (b.dtype != DType::F32) {
    throw InvalidArgument(fmt::format(
        "{}: the outer optimizer and codecs keep fp32 state; weight bucket {} holds {} (keep the parameters in "
        "fp32, or use plain averaging: outer_lr=1, outer_momentum=0, codec=identity)",
        spec(), b.index, dtype_name(b.dtype)));
  }
  for (auto* v : {&x0_, &momentum_, &delta_, &worker_residual_, &server_residual_}) {
    if (v->size() <= i) v->resize(i + 1);
  }
  if (momentum_started_.size() <= i) momentum_started_.resize(i + 1, 0.0f);
  const auto* w = static_cast<const float*>(b.data);
  x0_[i].assign(w, w + b.count);  // the wrapper broadcast rank 0's weights before this
  momentum_[i].assign(options_.outer.momentum > 0.0 ? b.count : 0, 0.0f);
  momentum_started_[i] = 0.0f;
  delta_[i].assign(b.count, 0.0f);
  if (error_feedback_) {
    worker_residual_[i].assign(b.count, 0.0f);
    server_residual_[i].assign(
        compressed_allreduce_owned_count(b.count, static_cast<int>(everyone_.size()), rank_), 0.0f);
  }
}

void LocalSgd::post_optimizer_step_hook(StepContext& ctx) {
  if ((ctx.step + 1) % options_.period != 0) return;
  timeout_ = ctx.comm.timeout();
  const Ring ring = Ring::natural(static_cast<int>(everyone_.size()));
  if (options_.overlap) {
    sync_weights_late(ctx);
  } else {
    for (const BucketView& b : ctx.weights) sync_weights(b, ctx, ctx.tags[static_cast<Tag>(b.index)]);
  }
  // Buffers are averaged as they are (an outer step means nothing for a
  // running statistic).
  for (const BucketView& b : ctx.buffers) {
    ring_allreduce(ctx.comm, ring, b.data, b.count, b.dtype, ReduceOp::Avg, ctx.tags[kBufferTags + b.index]);
  }
}

void LocalSgd::average(std::size_t i, float* values, std::size_t count, StepContext& ctx, Tag tag) {
  if (!codec_) {
    ring_allreduce(ctx.comm, Ring::natural(static_cast<int>(everyone_.size())), values, count, DType::F32,
                   ReduceOp::Avg, tag);
  } else if (error_feedback_) {
    const ErrorFeedbackBuffers fb{&worker_residual_.at(i), &server_residual_.at(i)};
    compressed_allreduce(ctx.comm, everyone_, values, count, *codec_, ReduceOp::Avg, tag, &fb);
  } else {
    compressed_allreduce(ctx.comm, everyone_, values, count, *codec_, ReduceOp::Avg, tag);
  }
}

void LocalSgd::sync_weights(const BucketView& b, StepContext& ctx, Tag tag) {
  if (plain_) {
    ring_allreduce(ctx.comm, Ring::natural(static_cast<int>(everyone_.size())), b.data, b.count, b.dtype,
                   ReduceOp::Avg, tag);
    return;
  }
  const auto i = static_cast<std::size_t>(b.index);
  auto* x = static_cast<float*>(b.data);
  float* x0 = x0_.at(i).data();
  float* delta = delta_.at(i).data();
  for (std::size_t k = 0; k < b.count; ++k) delta[k] = x0[k] - x[k];
  average(i, delta, b.count, ctx, tag);
  outer_sgd_step(x0, momentum_.at(i).data(), delta, b.count, options_.outer, momentum_started_.at(i) == 0.0f);
  momentum_started_[i] = 1.0f;
  std::memcpy(x, x0, b.count * sizeof(float));
}

void LocalSgd::wait_pending() const {
  if (in_flight_) {
    in_flight_->wait(timeout_);
    in_flight_.reset();
  }
}

void LocalSgd::replicas_averaged(StepContext& /*ctx*/) {
  // overlap=true: the average in flight is of a snapshot each rank took of
  // its own weights; applied at the next sync as "average + progress since
  // my snapshot" it would pull the now equal replicas apart again. The
  // replicas' exact mean supersedes it (with an outer optimizer, the next
  // pseudo-gradient then spans both periods). Without overlap nothing is
  // per rank: x0 is common, and the mean of the weights did not change.
  wait_pending();
  pending_[0] = 0.0f;
}

void LocalSgd::sync_weights_late(StepContext& ctx) {
  wait_pending();
  for (const BucketView& b : ctx.weights) {
    const auto i = static_cast<std::size_t>(b.index);
    auto* x = static_cast<float*>(b.data);
    float* snap = snapshot_.at(i).data();
    const float* avg = averaged_.at(i).data();
    if (pending_[0] != 0.0f) {
      // The average of the snapshot, plus what this rank learned since it.
      const float* base = avg;
      if (!plain_) {
        outer_sgd_step(x0_.at(i).data(), momentum_.at(i).data(), avg, b.count, options_.outer,
                       momentum_started_.at(i) == 0.0f);
        momentum_started_[i] = 1.0f;
        base = x0_[i].data();
      }
      for (std::size_t k = 0; k < b.count; ++k) x[k] = base[k] + (x[k] - snap[k]);
    }
    std::memcpy(snap, x, b.count * sizeof(float));
    float* next = averaged_[i].data();
    if (plain_) {
      std::memcpy(next, x, b.count * sizeof(float));
    } else {
      const float* x0 = x0_.at(i).data();
      for (std::size_t k = 0; k < b.count; ++k) next[k] = x0[k] - x[k];
    }
  }
  pending_[0] = 1.0f;
  in_flight_ = ctx.background("average of the last period's weights", [this](StepContext& job) {
    for (const BucketView& b : job.weights) {
      average(b.index, averaged_.at(b.index).data(), b.count, job, job.tags[static_cast<Tag>(b.index)]);
    }
  });
}

NamedFloatVectors LocalSgd::state_vectors() {
  NamedFloatVectors out;
  for (std::size_t i = 0; i < x0_.size(); ++i) {
    out.emplace_back(fmt::format("bucket{}.x0", i), &x0_[i]);
    if (options_.outer.momentum > 0.0) out.emplace_back(fmt::format("bucket{}.outer_momentum", i), &momentum_[i]);
    if (error_feedback_) {
      out.emplace_back(fmt::format("bucket{}.worker_residual", i), &worker_residual_[i]);
      out.emplace_back(fmt::format("bucket{}.server_residual", i), &server_residual_[i]);
    }
  }
  if (!x0_.empty()) out.emplace_back("outer_momentum_started", &momentum_started_);
  for (std::size_t i = 0; i < snapshot_.size(); ++i) {
    out.emplace_back(fmt::format("bucket{}.snapshot", i), &snapshot_[i]);
    out.emplace_back(fmt::format("bucket{}.pending_average", i), &averaged_[i]);
  }
  if (options_.overlap) out.emplace_back("average_pending", &pending_);
  return out;
}

AlgorithmState LocalSgd::state_dict() const {
  wait_pending();  // the average in the making is part of the state
  return save_float_vectors(const_cast<LocalSgd*>(this)->state_vectors());
}

void LocalSgd::load_state_dict(const AlgorithmState& state) {
  wait_pending();
  load_float_vectors(state, state_vectors(), "local_sgd");
}

void register_local_sgd(AlgorithmRegistry& registry) {
  registry.add(
      "local_sgd",
      AlgorithmEntry{
          "ranks step alone and average weights and buffers every `period` steps; DiLoCo's outer optimizer and a "
          "codec for the pseudo-gradient as options",
          {{"period", "optimizer steps between averagings (default 4)"},
           {"outer_lr", "outer SGD learning rate on the averaged pseudo-gradient x0 - x (default 1: plain averaging)"},
           {"outer_momentum", "outer SGD momentum (default 0; DiLoCo uses 0.9 with nesterov)"},
           {"nesterov", "true: Nesterov outer momentum (default false)"},
           {"codec", "compression of the pseudo-gradient: identity (default), fp16, bf16, minmax_uint8, sign1bit "
                     "(with error feedback)"},
           {"overlap", "true: average in the background and apply it one period late (default false)"}},
          [](const AlgorithmOptions& o, const WorldInfo& world) -> std::unique_ptr<Algorithm> {
            LocalSgdOptions opts;
            opts.period = option_count(o, "period", opts.period);
            opts.outer.lr = option_number(o, "outer_lr", opts.outer.lr);
            opts.outer.momentum = option_number(o, "outer_momentum", opts.outer.momentum);
            opts.outer.nesterov = option_bool(o, "nesterov", opts.outer.nesterov);
            opts.codec = option_choice(o, "codec", codec_choices(), opts.codec);
            opts.overlap = option_bool(o, "overlap", opts.overlap);
            return std::make_unique<LocalSgd>(opts, world.rank, world.size);
          },
          /*optimizer=*/"", /*needs_optimizer=*/true});
}

}  // namespace bagua
