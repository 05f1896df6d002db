#include "algorithms/gradient_allreduce/gradient_allreduce.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "algorithms/registry.hpp"
#include "collectives/hierarchical_allreduce.hpp"
#include "collectives/multi_ring_allreduce.hpp"
#include "core/cpu_affinity.hpp"
#include "core/error.hpp"

namespace bagua {

namespace {
int ranks_on_my_host(const WorldInfo& world) {
  if (world.host_keys.empty()) return 1;
  const long long mine = world.host_keys.at(world.rank);
  return static_cast<int>(std::count(world.host_keys.begin(), world.host_keys.end(), mine));
}

const char* impl_name(AllreduceImpl impl) {
  switch (impl) {
    case AllreduceImpl::Ring: return "ring";
    case AllreduceImpl::MultiRing: return "multi_ring";
    case AllreduceImpl::Inner: break;
  }
  return "inner";
}
}  // namespace

GradientAllreduce::GradientAllreduce(GradientAllreduceOptions options, int world_size,
                                     std::optional<HostLayout> hosts, std::vector<double> link_mbit, int rings_when_auto)
    : options_(options), ring_(Ring::natural(world_size)), hosts_(std::move(hosts)) {
  if (options_.hierarchical && !hosts_) {
    throw InvalidArgument("gradient_allreduce: hierarchical=true needs a host layout");
  }
  if (options_.allreduce == AllreduceImpl::MultiRing) {
    MultiRingOptions multi = options_.multi_ring;
    if (multi.rings == 0) multi.rings = rings_when_auto;
    plan_ = MultiRingPlan::make(ring_.ranks, std::move(link_mbit), multi);
  }
}

std::string GradientAllreduce::spec() const {
  std::string out = fmt::format("gradient_allreduce:allreduce={},hierarchical={}", impl_name(options_.allreduce),
                                options_.hierarchical ? "true" : "false");
  if (plan_) {
    const std::string rings = options_.multi_ring.rings == 0 ? "auto" : std::to_string(plan_->rings());
    out += fmt::format(",rings={},directions={}", rings, plan_->both_directions() ? "both" : "one");
  }
  return out;
}

void GradientAllreduce::on_bucket_ready(const BucketView& b, StepContext& ctx) {
  if (options_.hierarchical) {
    // Leaders' exchange always uses our ring: the inner backend's collectives
    // span every rank and cannot be restricted to the leaders.
    hierarchical_allreduce(ctx.comm, *hosts_, b.data, b.count, b.dtype, ReduceOp::Avg, ctx.tags[0], options_.ring);
  } else if (options_.allreduce == AllreduceImpl::Ring) {
    ring_allreduce(ctx.comm, ring_, b.data, b.count, b.dtype, ReduceOp::Avg, ctx.tags[0], options_.ring);
  } else if (plan_) {
    multi_ring_allreduce(ctx.comm, *plan_, b.data, b.count, b.dtype, ReduceOp::Avg, ctx.tags[0], options_.ring);
  } else {
    ctx.comm.allreduce(b.data, b.count, b.dtype, ReduceOp::Avg)->wait(ctx.comm.timeout());
  }
}

void register_gradient_allreduce(AlgorithmRegistry& registry) {
  registry.add(
      "gradient_allreduce",
      AlgorithmEntry{
          "average gradients every step with an all-reduce per bucket (the DDP baseline)",
          {{"allreduce", "ring (ours, default), multi_ring (several rings at once, chunks sized from link rates: "
                         "BAGUA_LINK_MBIT or a probe) or inner (the wrapped Gloo/NCCL backend's)"},
           {"hierarchical", "true: reduce inside each host, all-reduce among host leaders, broadcast inside hosts"},
           {"rings", "with allreduce=multi_ring: rings run at once, or auto (default: one per core a rank has to itself, "
                     "at most 4)"},
           {"directions", "with allreduce=multi_ring: one (default) or both (every other ring runs the other way)"}},
          [](const AlgorithmOptions& o, const WorldInfo& world) -> std::unique_ptr<Algorithm> {
            GradientAllreduceOptions opts;
            const std::string impl = option_choice(o, "allreduce", {"ring", "multi_ring", "inner"}, "ring");
            opts.allreduce = impl == "ring"         ? AllreduceImpl::Ring
                             : impl == "multi_ring" ? AllreduceImpl::MultiRing
                                                    : AllreduceImpl::Inner;
            opts.hierarchical = option_bool(o, "hierarchical", false);
            for (const char* key : {"rings", "directions"}) {
              if (o.count(key) && opts.allreduce != AllreduceImpl::MultiRing) {
                throw InvalidArgument(fmt::format("gradient_allreduce: {}= applies to allreduce=multi_ring only", key));
              }
            }
            const bool auto_count = !o.count("rings") || o.at("rings") == "auto";
            opts.multi_ring.rings = auto_count ? 0 : static_cast<int>(option_count(o, "rings", 1));
            opts.multi_ring.both_directions = option_choice(o, "directions", {"one", "both"}, "one") == "both";
            if (opts.hierarchical && opts.allreduce == AllreduceImpl::MultiRing) {
              throw InvalidArgument(
                  "gradient_allreduce: hierarchical=true runs its own ring among host leaders; use "
                  "allreduce=multi_ring without it");
            }
            std::vector<double> link_mbit;
            int rings = 1;
            if (opts.allreduce == AllreduceImpl::MultiRing) {
              if (world.link_mbit) link_mbit = world.link_mbit();
              if (auto_count) {
                rings = auto_rings(available_cores(), ranks_on_my_host(world));
                if (world.min_over_ranks) rings = world.min_over_ranks(rings);
              }
            }
            return std::make_unique<GradientAllreduce>(
                opts, world.size, hosts_if_hierarchical(opts.hierarchical, world, "gradient_allreduce"),
                std::move(link_mbit), rings);
          },
          /*optimizer=*/""});
}

}  // namespace bagua
