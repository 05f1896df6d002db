#include "algorithms/gradient_allreduce/gradient_allreduce.hpp"

#include <fmt/format.h>

#include "algorithms/registry.hpp"
#include "collectives/hierarchical_allreduce.hpp"
#include "core/error.hpp"

namespace bagua {

GradientAllreduce::GradientAllreduce(GradientAllreduceOptions options, int world_size,
                                     std::optional<HostLayout> hosts)
    : options_(options), ring_(Ring::natural(world_size)), hosts_(std::move(hosts)) {
  if (options_.hierarchical && !hosts_) {
    throw InvalidArgument("gradient_allreduce: hierarchical=true needs a host layout");
  }
}

std::string GradientAllreduce::spec() const {
  return fmt::format("gradient_allreduce:allreduce={},hierarchical={}",
                     options_.allreduce == AllreduceImpl::Ring ? "ring" : "inner",
                     options_.hierarchical ? "true" : "false");
}

void GradientAllreduce::on_bucket_ready(const BucketView& b, StepContext& ctx) {
  if (options_.hierarchical) {
    // Leaders' exchange always uses our ring: the inner backend's collectives
    // span every rank and cannot be restricted to the leaders.
    hierarchical_allreduce(ctx.comm, *hosts_, b.data, b.count, b.dtype, ReduceOp::Avg, ctx.tags[0], options_.ring);
  } else if (options_.allreduce == AllreduceImpl::Ring) {
    ring_allreduce(ctx.comm, ring_, b.data, b.count, b.dtype, ReduceOp::Avg, ctx.tags[0], options_.ring);
  } else {
    ctx.comm.allreduce(b.data, b.count, b.dtype, ReduceOp::Avg)->wait(ctx.comm.timeout());
  }
}

void register_gradient_allreduce(AlgorithmRegistry& registry) {
  registry.add(
      "gradient_allreduce",
      AlgorithmEntry{
          "average gradients every step with an all-reduce per bucket (the DDP baseline)",
          {{"allreduce", "ring (ours, default) or inner (the wrapped Gloo/NCCL backend's)"},
           {"hierarchical", "true: reduce inside each host, all-reduce among host leaders, broadcast inside hosts"}},
          [](const AlgorithmOptions& o, const WorldInfo& world) -> std::unique_ptr<Algorithm> {
            GradientAllreduceOptions opts;
            opts.allreduce = option_choice(o, "allreduce", {"ring", "inner"}, "ring") == "ring" ? AllreduceImpl::Ring
                                                                                                 : AllreduceImpl::Inner;
            opts.hierarchical = option_bool(o, "hierarchical", false);
            return std::make_unique<GradientAllreduce>(
                opts, world.size, hosts_if_hierarchical(opts.hierarchical, world, "gradient_allreduce"));
          },
          /*optimizer=*/""});
}

}  // namespace bagua
