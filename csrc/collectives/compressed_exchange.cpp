#include "collectives/compressed_exchange.hpp"

#include <vector>

namespace bagua {

void compressed_exchange(Communicator& comm, int peer, const float* mine, float* theirs, std::size_t count,
                         const Codec& codec, Tag tag) {
  std::vector<std::uint8_t> out(codec.wire_bytes(count)), in(out.size());
  codec.encode(mine, count, DType::F32, out.data());
  if (out.empty()) return;
  auto r = comm.irecv(in.data(), in.size(), peer, tag);
  auto s = comm.isend(out.data(), out.size(), peer, tag);
  r->wait(comm.timeout());
  s->wait(comm.timeout());
  codec.decode(in.data(), in.size(), count, theirs, false);
}

}  // namespace bagua
