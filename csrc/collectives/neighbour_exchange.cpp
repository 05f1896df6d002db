#include "collectives/neighbour_exchange.hpp"

#include <cstdint>

namespace bagua {

void neighbour_exchange(Communicator& comm, int left, int right, const void* mine, void* from_left, void* from_right,
                        std::size_t bytes, const TagBlock& tags, Tag first) {
  const auto* src = static_cast<const std::uint8_t*>(mine);
  auto* l = static_cast<std::uint8_t*>(from_left);
  auto* r = static_cast<std::uint8_t*>(from_right);
  exchange_in_pieces(
      comm, bytes,
      [&](std::size_t offset, std::size_t length) {
        return std::vector<RequestPtr>{comm.irecv(l + offset, length, left, tags[first]),
                                       comm.irecv(r + offset, length, right, tags[first + 1])};
      },
      [&](std::size_t offset, std::size_t length) {
        return std::vector<RequestPtr>{comm.isend(src + offset, length, right, tags[first]),
                                       comm.isend(src + offset, length, left, tags[first + 1])};
      });
}

}  // namespace bagua
