// One gossip step of decentralized training: each member's buffer replaced
// by its average with the peers its mode selects (topology/peer_selection).
// Written once over Communicator, for every dtype the reductions know.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "comm/communicator.hpp"
#include "comm/tag_source.hpp"
#include "topology/peer_selection.hpp"

namespace bagua {

// Tags of `tags` a peer_average uses: [first, first + kPeerAverageTags).
constexpr Tag kPeerAverageTags = 2;

// Every member of `members` calls it with the same mode, step and count.
// `in` is read, never written; `out` receives the average:
//   all:       the mean over all members;
//   shift_one: (in + partner's in) / 2;
//   ring:      (in + left's in + right's in) / 3 (with two members the
//              partner is both neighbours: (in + 2 partner's in) / 3).
// Sums are taken in that order, in the dtype (as torch adds two tensors),
// then divided. `scratch` holds `count` elements (ring only; may be null
// otherwise). Waits use the communicator's timeout.
void peer_average(Communicator& comm, const std::vector<int>& members, PeerMode mode, std::uint64_t step,
                  const void* in, void* out, void* scratch, std::size_t count, DType dtype, const TagBlock& tags,
                  Tag first_tag = 0);

}  // namespace bagua
