#include "collectives/hierarchical_allreduce.hpp"

#include "collectives/chain.hpp"

namespace bagua {

void hierarchical_allreduce(Communicator& comm, const HostLayout& layout, void* data, std::size_t count,
                            DType dtype, ReduceOp op, Tag tag, const RingOptions& options) {
  const int host = layout.host_of(comm.rank());
  const auto& members = layout.members(host);
  // Average = sum everywhere, then one division at each leader before the
  // broadcast, so the divisor is the world size and not a group size.
  const ReduceOp partial = op == ReduceOp::Avg ? ReduceOp::Sum : op;
  // The three stages use disjoint directed pairs (upstream inside hosts,
  // between leaders, downstream inside hosts), so one tag serves them all.
  chain_reduce(comm, members, data, count, dtype, partial, tag, options.chunk_bytes);
  if (comm.rank() == members.front()) {
    ring_allreduce(comm, Ring::of(layout.leaders()), data, count, dtype, partial, tag, options);
    if (op == ReduceOp::Avg) finish_average(data, count, dtype, comm.size());
  }
  chain_broadcast(comm, members, data, count * dtype_size(dtype), tag, options.chunk_bytes);
}

}  // namespace bagua
