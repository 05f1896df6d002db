// One compressed swap with a peer: send C(mine), receive the peer's C(theirs)
// and decode it. The building block of the decentralized algorithms (each
// rank swaps with the peers of its schedule); both sides must call it with
// the same count, codec and tag.
#pragma once

#include "codec/codec.hpp"
#include "comm/communicator.hpp"

namespace bagua {

void compressed_exchange(Communicator& comm, int peer, const float* mine, float* theirs, std::size_t count,
                         const Codec& codec, Tag tag);

}  // namespace bagua
