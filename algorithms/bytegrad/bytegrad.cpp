#include "algorithms/bytegrad/bytegrad.hpp"

#include <fmt/format.h>

#include <numeric>

#include "algorithms/registry.hpp"
#include "collectives/chain.hpp"
#include "collectives/compressed_allreduce.hpp"
#include "core/error.hpp"

namespace bagua {
namespace {
constexpr std::size_t kChainChunkBytes = 2u << 20;
}  // namespace

Bytegrad::Bytegrad(std::string spec, CodecPtr codec, int world_size, std::optional<HostLayout> hosts)
    : spec_(std::move(spec)), codec_(std::move(codec)), everyone_(world_size), hosts_(std::move(hosts)) {
  std::iota(everyone_.begin(), everyone_.end(), 0);
}

std::string Bytegrad::spec() const { return spec_; }

void Bytegrad::init_operations(const BucketView& b, StepContext& /*ctx*/) {
  if (b.dtype != DType::F32) {
    throw InvalidArgument(fmt::format("{} compresses fp32 gradients; bucket {} holds {} (keep the parameters in fp32, "
                                      "or use gradient_allreduce)",
                                      spec_, b.index, dtype_name(b.dtype)));
  }
}

void Bytegrad::on_bucket_ready(const BucketView& b, StepContext& ctx) {
  auto* data = static_cast<float*>(b.data);
  if (!hosts_) {
    compressed_allreduce(ctx.comm, everyone_, data, b.count, *codec_, ReduceOp::Avg, ctx.tags[0]);
    return;
  }
  // Exact sums inside a host, compression only on the leaders' links; the
  // stages use disjoint pairs of ranks, so one tag serves them all.
  const auto& members = hosts_->members(hosts_->host_of(ctx.comm.rank()));
  chain_reduce(ctx.comm, members, data, b.count, DType::F32, ReduceOp::Sum, ctx.tags[0], kChainChunkBytes);
  if (ctx.comm.rank() == members.front()) {
    compressed_allreduce(ctx.comm, hosts_->leaders(), data, b.count, *codec_, ReduceOp::Sum, ctx.tags[0]);
    finish_average(data, b.count, DType::F32, ctx.comm.size());
  }
  chain_broadcast(ctx.comm, members, data, b.count * sizeof(float), ctx.tags[0], kChainChunkBytes);
}

std::unique_ptr<Algorithm> make_bytegrad(const std::string& spec_head, const std::string& codec, bool hierarchical,
                                         const WorldInfo& world) {
  return std::make_unique<Bytegrad>(fmt::format("{}hierarchical={}", spec_head, hierarchical ? "true" : "false"),
                                    make_codec(codec), world.size, hosts_if_hierarchical(hierarchical, world, spec_head));
}

void register_bytegrad(AlgorithmRegistry& registry) {
  const std::map<std::string, std::string> options{
      {"hierarchical", "true: sum exactly inside each host, compress only between host leaders"}};
  auto factory = [](std::string name, std::string codec) {
    return [name, codec](const AlgorithmOptions& o, const WorldInfo& world) {
      return make_bytegrad(name + ":", codec, option_bool(o, "hierarchical", false), world);
    };
  };
  registry.add("bytegrad",
               AlgorithmEntry{"average gradients with an 8-bit (minmax_uint8) compressed all-reduce per bucket",
                              options, factory("bytegrad", "minmax_uint8"), /*optimizer=*/""});
  registry.add("fp16_allreduce",
               AlgorithmEntry{"average gradients with an all-reduce that sends fp16", options,
                              factory("fp16_allreduce", "fp16"), /*optimizer=*/""});
  registry.add("bf16_allreduce",
               AlgorithmEntry{"average gradients with an all-reduce that sends bf16", options,
                              factory("bf16_allreduce", "bf16"), /*optimizer=*/""});
}

}  // namespace bagua
