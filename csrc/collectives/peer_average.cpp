#include "collectives/peer_average.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "collectives/ring_allreduce.hpp"
#include "core/error.hpp"
#include "core/reduce_op.hpp"
#include "topology/ring.hpp"

namespace bagua {
namespace {

// The exchange goes in pieces, one piece in flight per message stream. A
// whole model sent at once is a burst larger than a shaped link's queue
// (a 1.9 MB message into tc tbf's 1.25 MB at 100 Mbit/s): the tail is
// dropped and waits for retransmission, and steps took 100-200 ms longer
// (measured, charlm at world 2; docs/decentralized.md).
constexpr std::size_t kPieceBytes = 256u << 10;

const void* at(const void* p, std::size_t offset) { return static_cast<const std::uint8_t*>(p) + offset; }
void* at(void* p, std::size_t offset) { return static_cast<std::uint8_t*>(p) + offset; }

// `start(offset, length)` posts one piece's messages; at most two pieces
// are in flight, so the link stays busy while a piece completes.
template <class Start>
void exchange_in_pieces(Communicator& comm, std::size_t bytes, Start&& start) {
  std::vector<RequestPtr> previous;
  for (std::size_t offset = 0; offset < bytes; offset += kPieceBytes) {
    auto current = start(offset, std::min(kPieceBytes, bytes - offset));
    for (auto& request : previous) request->wait(comm.timeout());
    previous = std::move(current);
  }
  for (auto& request : previous) request->wait(comm.timeout());
}

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
      exchange_in_pieces(comm, bytes, [&](std::size_t offset, std::size_t length) {
        return std::vector<RequestPtr>{comm.isend(at(in, offset), length, peer, tags[first_tag]),
                                       comm.irecv(at(theirs, offset), length, peer, tags[first_tag])};
      });
      reduce_into(out, theirs, count, dtype, ReduceOp::Sum);
      finish_average(out, count, dtype, 2);
      return;
    }
    case PeerMode::Ring: {
      if (!scratch) throw InvalidArgument("peer_average: the ring mode needs a scratch buffer");
      const int left = members[(position + n - 1) % n];
      const int right = members[(position + 1) % n];
      // To the right on the first tag, to the left on the second: with two
      // members, left and right are one rank, and the tags tell the copies apart.
      exchange_in_pieces(comm, bytes, [&](std::size_t offset, std::size_t length) {
        return std::vector<RequestPtr>{comm.isend(at(in, offset), length, right, tags[first_tag]),
                                       comm.isend(at(in, offset), length, left, tags[first_tag + 1]),
                                       comm.irecv(at(out, offset), length, left, tags[first_tag]),
                                       comm.irecv(at(scratch, offset), length, right, tags[first_tag + 1])};
      });
      // (in + left) + right, then / 3; out holds left's.
      reduce_into(out, in, count, dtype, ReduceOp::Sum);
      reduce_into(out, scratch, count, dtype, ReduceOp::Sum);
      finish_average(out, count, dtype, 3);
      return;
    }
  }
}

}  // namespace bagua
