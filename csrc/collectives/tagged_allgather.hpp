// Every member's small record to every member, over point-to-point messages
// of one tag. The communicator's own allgather is matched by issue order, so
// it cannot run beside other operations on the same transport (a background
// loop next to the engine's buckets); this one can. Meant for a few bytes per
// rank (flags, counters): each member sends n-1 and receives n-1 messages,
// and learns exactly which member did not answer.
#pragma once

#include <cstddef>
#include <vector>

#include "comm/communicator.hpp"

namespace bagua {

// `all` receives members.size() records of `bytes`, in members' order, this
// rank's `mine` among them. Throws TimeoutError naming every member whose
// record did not arrive within the communicator's timeout (then `all` must
// stay alive until the transport drops the receives: callers keep it as a
// member, not on the stack).
void tagged_allgather(Communicator& comm, const std::vector<int>& members, const void* mine, void* all,
                      std::size_t bytes, Tag tag);

}  // namespace bagua
