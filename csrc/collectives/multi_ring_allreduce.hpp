// Parallel multi-ring all-reduce (Ravnest): the rings of a MultiRingPlan run
// at once, each a pipelined ring all-reduce of its own part of the buffer
// with its own order, direction and tag, so that both directions of every
// link and more than one core are busy; on uneven links each rank's segment
// has the size the plan gave it.
#pragma once

#include <cstddef>

#include "collectives/ring_allreduce.hpp"
#include "comm/communicator.hpp"
#include "topology/multi_ring_plan.hpp"

namespace bagua {

// In-place all-reduce of `count` elements among the plan's ranks (the caller
// must be one of them). Ring k uses tag `first_tag + k`, so an operation
// takes plan.rings() consecutive tags. Ring 0 runs on the calling thread,
// the others on helper threads that belong to the calling thread (two
// callers never queue behind each other). Every wait uses the
// communicator's timeout; the first failure of any ring is rethrown after
// all rings have ended.
void multi_ring_allreduce(Communicator& comm, const MultiRingPlan& plan, void* data, std::size_t count, DType dtype,
                          ReduceOp op, Tag first_tag, const RingOptions& options = {});

}  // namespace bagua
