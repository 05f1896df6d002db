#include "collectives/peer_average.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "collectives/neighbour_exchange.hpp"
#include "collectives/ring_allreduce.hpp"
#include "core/error.hpp"
#include "core/reduce_op.hpp"
#include "topology/ring.hpp"

namespace bagua {
namespace {

const void* at(const void* p, std::size_t offset) { return static_cast<const std::uint8_t*>(p) + offset; }
void* at(void* p, std::size_t offset) { return static_cast<std::uint8_t*>(p) + offset; }

}  // namespace

void peer_average(Communicator& comm, const std::vector<int>& members, PeerMode mode, std::uint64_t step,
                  const void* in, void* out, void* scratch, std::size_t count, DType dtype, const TagBlock& tags,
                  Tag first_tag) {
  const int n = static_cast<int>(members.size());
  check_peer_mode(mode, n);
  const auto it = std::find(members.begin(), members.end(), comm.rank());
  if (it == members.end()) throw InvalidArgument(fmt::format("peer_average: rank {} is not a member", comm.rank()));
  const int position = static_cast<int>(it - members.begin());
  const std::size_t bytes = count * dtype_size(dtype);
  if (out != in) std::memcpy(out, in, bytes);
  if (n == 1 || count == 0) return;
  switch (mode) {
    case PeerMode::All:
      ring_allreduce(comm, Ring::of(members), out, count, dtype, ReduceOp::Avg, tags[first_tag]);
      return;
    case PeerMode::ShiftOne: {
      const int peer = members[shift_one_peer(position, n, step)];
      // `out` already holds a copy of `in`; the partner's arrives in scratch
      // when given, else in a buffer of our own.
      std::vector<std::uint8_t> own;
      void* theirs = scratch;
      if (!theirs) {
        own.resize(bytes);
        theirs = own.data();
      }
      exchange_in_pieces(
          comm, bytes,
          [&](std::size_t offset, std::size_t length) {
            return std::vector<RequestPtr>{comm.irecv(at(theirs, offset), length, peer, tags[first_tag])};
          },
          [&](std::size_t offset, std::size_t length) {
            return std::vector<RequestPtr>{comm.isend(at(in, offset), length, peer, tags[first_tag])};
          });
      reduce_into(out, theirs, count, dtype, ReduceOp::Sum);
      finish_average(out, count, dtype, 2);
      return;
    }
    case PeerMode::Ring: {
      if (!scratch) throw InvalidArgument("peer_average: the ring mode needs a scratch buffer");
      const int left = members[(position + n - 1) % n];
      const int right = members[(position + 1) % n];
      neighbour_exchange(comm, left, right, in, out, scratch, bytes, tags, first_tag);
      // (in + left) + right, then / 3; out holds left's.
      reduce_into(out, in, count, dtype, ReduceOp::Sum);
      reduce_into(out, scratch, count, dtype, ReduceOp::Sum);
      finish_average(out, count, dtype, 3);
      return;
    }
  }
}

}  // namespace bagua
