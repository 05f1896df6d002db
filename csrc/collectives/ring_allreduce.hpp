// Bandwidth-optimal ring all-reduce over point-to-point messages:
// a reduce-scatter followed by an all-gather, each moving (n-1)/n of the
// buffer per rank. Segments are cut into pieces so that receiving piece k+1,
// reducing piece k and forwarding piece k-1 happen at the same time.
#pragma once

#include <cstddef>
#include <vector>

#include "comm/communicator.hpp"
#include "topology/ring.hpp"

namespace bagua {

struct RingOptions {
  // Pipelining unit. Small pieces overlap better but each costs one message
  // (tens of microseconds through Gloo); 2 MiB measured best on loopback
  // (docs/benchmarks.md).
  std::size_t chunk_bytes = 2u << 20;
};

// In-place all-reduce of `count` elements among the ranks of `ring` (the
// caller must be one of them). Blocks until done; every wait uses the
// communicator's timeout. fp16/bf16 are reduced in fp32, pairwise.
void ring_allreduce(Communicator& comm, const Ring& ring, void* data, std::size_t count, DType dtype,
                    ReduceOp op, Tag tag, const RingOptions& options = {});

// The same over caller-chosen segments of `data`: segments[j] is ring
// segment j, owned by position j - 1 after the reduce-scatter; any sizes,
// zero included (a multi-ring plan sizes them from link rates). Every rank
// must pass the same segments.
void ring_allreduce(Communicator& comm, const Ring& ring, void* data, const std::vector<Segment>& segments,
                    DType dtype, ReduceOp op, Tag tag, const RingOptions& options = {});

}  // namespace bagua
