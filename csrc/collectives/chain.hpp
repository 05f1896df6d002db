// Pipelined chain collectives inside a small group (the ranks of one host):
// each link carries the buffer once, in pieces, so the chain's latency is
// one buffer plus one piece per hop.
#pragma once

#include <cstddef>
#include <vector>

#include "comm/communicator.hpp"

namespace bagua {

// chain[0] is the root. Every rank in `chain` calls it; others must not.
void chain_broadcast(Communicator& comm, const std::vector<int>& chain, void* data, std::size_t bytes, Tag tag,
                     std::size_t chunk_bytes);

// Reduces every member's buffer into chain[0]'s. Other members' buffers are
// left holding partial results.
void chain_reduce(Communicator& comm, const std::vector<int>& chain, void* data, std::size_t count, DType dtype,
                  ReduceOp op, Tag tag, std::size_t chunk_bytes);

}  // namespace bagua
