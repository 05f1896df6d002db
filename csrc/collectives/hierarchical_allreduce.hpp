// All-reduce in three stages for multi-host clusters: reduce inside each
// host to its leader, ring all-reduce among the leaders, broadcast inside
// each host. Only leaders use the (slow) links between hosts.
#pragma once

#include "collectives/ring_allreduce.hpp"
#include "topology/host_layout.hpp"

namespace bagua {

void hierarchical_allreduce(Communicator& comm, const HostLayout& layout, void* data, std::size_t count,
                            DType dtype, ReduceOp op, Tag tag, const RingOptions& options = {});

}  // namespace bagua
