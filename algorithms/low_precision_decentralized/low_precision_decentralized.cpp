#include "algorithms/low_precision_decentralized/low_precision_decentralized.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>

#include "algorithms/registry.hpp"
#include "collectives/neighbour_exchange.hpp"
#include "core/error.hpp"

namespace bagua {
namespace {

const std::vector<std::string>& codec_choices() {
  static const std::vector<std::string> names{"minmax_uint8", "fp16", "bf16", "sign1bit"};
  return names;
}

// Values per codec header: the differences of a whole model mix layers of
// very different scales, so each region gets its own range (as qadam's
// 4096) or its own sign scale (as onebit_adam's 256).
std::size_t block_elems_of(const std::string& codec) {
  if (codec == "minmax_uint8") return 4096;
  if (codec == "sign1bit") return 256;
  return 0;
}

// FNV-1a over the bytes of a vector: equal replicas give equal sums.
std::uint64_t checksum(const std::vector<float>& v) {
  std::uint64_t h = 1469598103934665603ull;
  const auto* p = reinterpret_cast<const std::uint8_t*>(v.data());
  for (std::size_t i = 0; i < v.size() * sizeof(float); ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

}  // namespace

LowPrecisionDecentralized::LowPrecisionDecentralized(LowPrecisionDecentralizedOptions options, int rank,
                                                     int world_size)
    : options_(std::move(options)),
      rank_(rank),
      size_(world_size),
      left_((rank + world_size - 1) % world_size),
      right_((rank + 1) % world_size),
      codec_(make_codec(options_.codec, block_elems_of(options_.codec))),
      error_feedback_(options_.codec == "sign1bit") {}

std::string LowPrecisionDecentralized::spec() const {
  return fmt::format("low_precision_decentralized:check_interval={},codec={},communication_interval={}",
                     options_.check_interval, options_.codec, options_.communication_interval);
}

void LowPrecisionDecentralized::init_operations(const BucketView& b, StepContext& ctx) {
  if (b.dtype != DType::F32) {
    throw InvalidArgument(fmt::format("{} keeps fp32 replicas; weight bucket {} holds {} (keep the parameters in fp32)",
                                      spec(), b.index, dtype_name(b.dtype)));
  }
  const auto i = static_cast<std::size_t>(b.index);
  if (2 * (i + 1) > ctx.tags.size()) throw InvalidArgument(fmt::format("{}: too many weight buckets", spec()));
  if (buckets_.size() <= i) buckets_.resize(i + 1);
  Replicas& rep = buckets_[i];
  // The wrapper broadcast rank 0's weights before this: all replicas agree.
  start_replicas_from(b);
  rep.residual.assign(error_feedback_ ? b.count : 0, 0.0f);
  rep.d.assign(b.count, 0.0f);
  const std::size_t wire = codec_->wire_bytes(b.count);
  rep.wire.assign(wire, 0);
  rep.from_left.assign(wire, 0);
  rep.from_right.assign(wire, 0);
}

void LowPrecisionDecentralized::start_replicas_from(const BucketView& b) {
  Replicas& rep = buckets_.at(static_cast<std::size_t>(b.index));
  const auto* x = static_cast<const float*>(b.data);
  rep.w.assign(x, x + b.count);
  rep.left = rep.w;
  rep.right = rep.w;
}

void LowPrecisionDecentralized::replicas_averaged(StepContext& ctx) {
  for (const BucketView& b : ctx.weights) {
    start_replicas_from(b);
    // A rank's residual would go into its next difference, and the replicas
    // would part again by what each rank had left unsent.
    std::vector<float>& residual = buckets_.at(static_cast<std::size_t>(b.index)).residual;
    std::fill(residual.begin(), residual.end(), 0.0f);
  }
}

void LowPrecisionDecentralized::post_optimizer_step_hook(StepContext& ctx) {
  // The previous exchange has finished (the end of backward waited for it),
  // so the replicas are consistent here.
  if (options_.check_interval > 0 && ctx.step % options_.check_interval == 0) check_invariant(ctx);
  if ((ctx.step + 1) % options_.communication_interval != 0) return;
  for (const BucketView& b : ctx.weights) {
    Replicas& rep = buckets_.at(b.index);
    auto* x = static_cast<float*>(b.data);
    const float* w = rep.w.data();
    const float* l = rep.left.data();
    const float* r = rep.right.data();
    float* d = rep.d.data();
    for (std::size_t k = 0; k < b.count; ++k) d[k] = x[k] + l[k] / 3.0f + r[k] / 3.0f - 5.0f * w[k] / 3.0f;
    if (error_feedback_) {
      codec_->encode_with_feedback(d, b.count, rep.residual.data(), rep.wire.data());
    } else {
      codec_->encode(d, b.count, DType::F32, rep.wire.data());
    }
    // w += D(C(d)), exactly as the neighbours will add it to their copies.
    codec_->decode(rep.wire.data(), rep.wire.size(), b.count, rep.w.data(), /*accumulate=*/true);
    std::memcpy(x, rep.w.data(), b.count * sizeof(float));
  }
  if (size_ == 1) return;
  ctx.launch("compressed differences to both ring neighbours", [this](StepContext& job) {
    for (const BucketView& b : job.weights) {
      Replicas& rep = buckets_.at(b.index);
      const Tag first = static_cast<Tag>(2 * b.index);
      neighbour_exchange(job.comm, left_, right_, rep.wire.data(), rep.from_left.data(), rep.from_right.data(),
                         rep.wire.size(), job.tags, first);
      codec_->decode(rep.from_left.data(), rep.from_left.size(), b.count, rep.left.data(), true);
      codec_->decode(rep.from_right.data(), rep.from_right.size(), b.count, rep.right.data(), true);
    }
  });
}

void LowPrecisionDecentralized::check_invariant(StepContext& ctx) {
  if (size_ == 1) return;
  // Mine: the checksums of w, l, r per bucket; each neighbour's w must equal
  // my copy of it. Every rank then learns who found a difference.
  std::vector<std::uint64_t> mine, of_left(buckets_.size() * 3), of_right(buckets_.size() * 3);
  for (const Replicas& rep : buckets_) {
    mine.insert(mine.end(), {checksum(rep.w), checksum(rep.left), checksum(rep.right)});
  }
  const std::size_t bytes = mine.size() * sizeof(std::uint64_t);
  neighbour_exchange(ctx.comm, left_, right_, mine.data(), of_left.data(), of_right.data(), bytes, ctx.tags, 0);
  std::vector<std::int32_t> drifted(size_, 0);
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    // My left copy must be my left neighbour's w; my right copy my right's w.
    if (mine[3 * b + 1] != of_left[3 * b] || mine[3 * b + 2] != of_right[3 * b]) drifted[rank_] = 1;
  }
  ctx.comm.allreduce(drifted.data(), drifted.size(), DType::I32, ReduceOp::Sum)->wait(ctx.comm.timeout());
  std::vector<int> ranks;
  for (int q = 0; q < size_; ++q) {
    if (drifted[q]) ranks.push_back(q);
  }
  if (!ranks.empty()) {
    throw Error(fmt::format(
        "{}: at step {} the copies that ranks {} keep of their ring neighbours' weights differ from those weights "
        "(the replicas drifted: a message was altered, or a rank's state was changed or loaded alone); the "
        "exchange would now diverge silently. Restart from a checkpoint saved on every rank at the same step",
        spec(), ctx.step, fmt::join(ranks, ", ")));
  }
}

NamedFloatVectors LowPrecisionDecentralized::state_vectors() {
  NamedFloatVectors out;
  for (std::size_t i = 0; i < buckets_.size(); ++i) {
    out.emplace_back(fmt::format("bucket{}.weights", i), &buckets_[i].w);
    out.emplace_back(fmt::format("bucket{}.left", i), &buckets_[i].left);
    out.emplace_back(fmt::format("bucket{}.right", i), &buckets_[i].right);
    if (error_feedback_) out.emplace_back(fmt::format("bucket{}.residual", i), &buckets_[i].residual);
  }
  return out;
}

AlgorithmState LowPrecisionDecentralized::state_dict() const {
  return save_float_vectors(const_cast<LowPrecisionDecentralized*>(this)->state_vectors());
}

void LowPrecisionDecentralized::load_state_dict(const AlgorithmState& state) {
  load_float_vectors(state, state_vectors(), "low_precision_decentralized");
}

void register_low_precision_decentralized(AlgorithmRegistry& registry) {
  registry.add(
      "low_precision_decentralized",
      AlgorithmEntry{
          "ring gossip of compressed weight differences with three replicas per rank (BAGUA's low-precision "
          "decentralized SGD); needs optimizer=",
          {{"codec", "minmax_uint8 (default), fp16, bf16, or sign1bit (with error feedback)"},
           {"check_interval", "compare replica checksums with the neighbours every N steps (default 100; 0: never)"},
           {"communication_interval", "gossip after every N-th optimizer step (default 1)"}},
          [](const AlgorithmOptions& o, const WorldInfo& world) -> std::unique_ptr<Algorithm> {
            LowPrecisionDecentralizedOptions opts;
            opts.codec = option_choice(o, "codec", codec_choices(), opts.codec);
            opts.check_interval = option_count(o, "check_interval", opts.check_interval, 0);
            opts.communication_interval = option_count(o, "communication_interval", opts.communication_interval);
            return std::make_unique<LowPrecisionDecentralized>(opts, world.rank, world.size);
          },
          /*optimizer=*/"", /*needs_optimizer=*/true});
}

}  // namespace bagua
