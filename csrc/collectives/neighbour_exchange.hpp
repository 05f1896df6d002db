// Messages with both ring neighbours at once, sent in pieces: the transport
// of ring gossip (peer_average's ring mode, low_precision_decentralized).
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "comm/communicator.hpp"
#include "comm/tag_source.hpp"

namespace bagua {

// Exchanges go in pieces, at most two in flight per message stream. A whole
// model sent as one message is a burst larger than a shaped link's queue
// (1.9 MB into tc tbf's 1.25 MB at 100 Mbit/s): its tail is dropped and
// waits for retransmission, and steps took 100-200 ms longer (charlm, world
// 2; docs/decentralized.md). One piece at a time leaves the link idle
// between pieces; two keep it busy.
constexpr std::size_t kExchangePieceBytes = 256u << 10;

// `start(offset, length)` posts one piece's messages and returns them; each
// piece is waited for (with the communicator's timeout) after the next one
// has been posted.
template <class Start>
void exchange_in_pieces(Communicator& comm, std::size_t bytes, Start&& start) {
  std::vector<RequestPtr> previous;
  for (std::size_t offset = 0; offset < bytes; offset += kExchangePieceBytes) {
    auto current = start(offset, std::min(kExchangePieceBytes, bytes - offset));
    for (auto& request : previous) request->wait(comm.timeout());
    previous = std::move(current);
  }
  for (auto& request : previous) request->wait(comm.timeout());
}

// Sends `bytes` of `mine` to both `left` and `right` and receives what each
// of them sends this way into `from_left` and `from_right`. Uses tags
// first and first + 1 of `tags` (to the right on the first, to the left on
// the second), so that with two ranks, where left and right are one rank,
// the two copies are told apart.
void neighbour_exchange(Communicator& comm, int left, int right, const void* mine, void* from_left, void* from_right,
                        std::size_t bytes, const TagBlock& tags, Tag first);

}  // namespace bagua
