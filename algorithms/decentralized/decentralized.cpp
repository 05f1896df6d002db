#include "algorithms/decentralized/decentralized.hpp"

#include <fmt/format.h>

#include <cstring>
#include <numeric>

#include "algorithms/registry.hpp"
#include "collectives/chain.hpp"
#include "collectives/peer_average.hpp"
#include "core/error.hpp"
#include "core/reduce_op.hpp"

namespace bagua {
namespace {

constexpr std::size_t kChainChunkBytes = 2u << 20;
// Tags per weight bucket of one exchange: the peers' two and the host chain's.
constexpr Tag kTagsPerBucket = kPeerAverageTags + 1;

}  // namespace

Decentralized::Decentralized(DecentralizedOptions options, int world_size, std::optional<HostLayout> hosts)
    : options_(options), everyone_(world_size), hosts_(std::move(hosts)) {
  std::iota(everyone_.begin(), everyone_.end(), 0);
  if (options_.communication_interval == 0) {
    throw InvalidArgument("decentralized: communication_interval must be at least 1");
  }
  if (options_.hierarchical && !hosts_) throw InvalidArgument("decentralized: hierarchical=true needs a host layout");
  try {
    check_peer_mode(options_.mode, hosts_ ? hosts_->num_hosts() : world_size);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(fmt::format("decentralized{}: {}", hosts_ ? " (hierarchical: the members are the host "
                                                                      "leaders)" : "", e.what()));
  }
}

std::string Decentralized::spec() const {
  return fmt::format("decentralized:communication_interval={},hierarchical={},peer_selection_mode={}",
                     options_.communication_interval, options_.hierarchical ? "true" : "false",
                     peer_mode_name(options_.mode));
}

void Decentralized::init_operations(const BucketView& b, StepContext& ctx) {
  const auto i = static_cast<std::size_t>(b.index);
  if ((i + 1) * kTagsPerBucket > ctx.tags.size()) {
    throw InvalidArgument(fmt::format("decentralized: {} weight buckets need more tags than an operation has",
                                      i + 1));
  }
  if (averaged_.size() <= i) {
    averaged_.resize(i + 1);
    scratch_.resize(i + 1);
  }
  const std::size_t bytes = b.count * dtype_size(b.dtype);
  averaged_[i].assign(bytes, 0);
  scratch_[i].assign(bytes, 0);
  pending_ = false;
}

void Decentralized::forward_pre_hook(StepContext& ctx) {
  if (ctx.step % options_.communication_interval != 0) return;
  pending_ = true;
  // Forward and backward only read the weights: the exchange reads them too,
  // beside them, and writes its result elsewhere.
  ctx.launch("peer averaging of the weights", [this](StepContext& job) {
    for (const BucketView& b : job.weights) exchange(b, job);
  });
}

void Decentralized::exchange(const BucketView& b, StepContext& ctx) {
  void* out = averaged_.at(b.index).data();
  void* scratch = scratch_.at(b.index).data();
  const Tag first = static_cast<Tag>(b.index) * kTagsPerBucket;
  if (!hosts_) {
    peer_average(ctx.comm, everyone_, options_.mode, ctx.step, b.data, out, scratch, b.count, b.dtype, ctx.tags, first);
    return;
  }
  // The host's exact average, then the leaders' exchange, then the result
  // back to every member of the host.
  const auto& members = hosts_->members(hosts_->host_of(ctx.comm.rank()));
  const std::size_t bytes = b.count * dtype_size(b.dtype);
  std::memcpy(out, b.data, bytes);
  chain_reduce(ctx.comm, members, out, b.count, b.dtype, ReduceOp::Sum, ctx.tags[first + kPeerAverageTags],
               kChainChunkBytes);
  if (ctx.comm.rank() == members.front()) {
    finish_average(out, b.count, b.dtype, static_cast<int>(members.size()));
    std::vector<std::uint8_t> host_mean(static_cast<std::uint8_t*>(out), static_cast<std::uint8_t*>(out) + bytes);
    peer_average(ctx.comm, hosts_->leaders(), options_.mode, ctx.step, host_mean.data(), out, scratch, b.count,
                 b.dtype, ctx.tags, first);
  }
  chain_broadcast(ctx.comm, members, out, bytes, ctx.tags[first + kPeerAverageTags], kChainChunkBytes);
}

void Decentralized::post_backward_hook(StepContext& ctx) {
  if (!pending_) return;
  pending_ = false;
  // The engine waited for the exchange before this hook.
  for (const BucketView& b : ctx.weights) {
    std::memcpy(b.data, averaged_.at(b.index).data(), b.count * dtype_size(b.dtype));
  }
}

void register_decentralized(AlgorithmRegistry& registry) {
  registry.add(
      "decentralized",
      AlgorithmEntry{
          "D-PSGD: average the weights with peers (no gradient all-reduce), the exchange overlapping forward and "
          "backward",
          {{"peer_selection_mode", "all, shift_one (default: one partner per step, even world size) or ring (both "
                                   "neighbours, weight 1/3 each)"},
           {"communication_interval", "exchange every N steps (default 1)"},
           {"hierarchical", "true: average exactly inside each host; only host leaders exchange with peers"}},
          [](const AlgorithmOptions& o, const WorldInfo& world) -> std::unique_ptr<Algorithm> {
            DecentralizedOptions opts;
            opts.mode = peer_mode_from_name(
                option_choice(o, "peer_selection_mode", peer_mode_names(), "shift_one"));
            opts.communication_interval = option_count(o, "communication_interval", 1);
            opts.hierarchical = option_bool(o, "hierarchical", false);
            return std::make_unique<Decentralized>(opts, world.size,
                                                   hosts_if_hierarchical(opts.hierarchical, world, "decentralized"));
          },
          /*optimizer=*/""});
}

}  // namespace bagua
