// Messages with both ring neighbours at once, sent in pieces: the transport
// of ring gossip (peer_average's ring mode, low_precision_decentralized).
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "comm/communicator.hpp"
#include "comm/tag_source.hpp"

namespace bagua {

// Exchanges go in pieces of kExchangePieceBytes, two in flight per message
// stream: piece k is sent once piece k - 2 has been sent and received. A
// whole model sent as one message is a burst larger than a shaped link's
// queue (1.9 MB into tc tbf's 1.25 MB at 100 Mbit/s): its tail is dropped
// and waits for retransmission, and steps took 100-200 ms longer (charlm,
// world 2; docs/decentralized.md). One piece at a time leaves the link idle
// between pieces; two keep it busy; three overflowed the queue again.
constexpr std::size_t kExchangePieceBytes = 256u << 10;
constexpr std::size_t kPiecesInFlight = 2;

// Receives are posted kReceivesAhead pieces ahead of the sends. Over TCP a
// sender writes a piece only once the receiver's notice that the receive is
// posted has arrived, and that notice travels the reverse link behind the
// peer's own pieces in flight: posted with its own piece, it came about two
// pieces late and the link idled meanwhile (charlm, world 4, 100 Mbit/s:
// decentralized 1.57x -> 1.63x torch DDP, low_precision_decentralized
// 2.55x -> 2.89x). Receives in place cost nothing, and the pace is still set
// by completed pieces, so the shaper's queue holds no more than before:
// posting every receive but pacing by completed sends alone let the socket
// take everything at once, and decentralized fell to 1.49x.
constexpr std::size_t kReceivesAhead = 4;

// `receive(offset, length)` and `send(offset, length)` post one piece's
// messages and return them; every request is waited for with the
// communicator's timeout.
template <class Receive, class Send>
void exchange_in_pieces(Communicator& comm, std::size_t bytes, Receive&& receive, Send&& send) {
  const std::size_t pieces = (bytes + kExchangePieceBytes - 1) / kExchangePieceBytes;
  const auto offset = [](std::size_t k) { return k * kExchangePieceBytes; };
  const auto length = [&](std::size_t k) { return std::min(kExchangePieceBytes, bytes - offset(k)); };
  std::vector<std::vector<RequestPtr>> received(pieces), sent(pieces);
  std::size_t receives_posted = 0;
  for (std::size_t k = 0; k < pieces; ++k) {
    for (; receives_posted < std::min(pieces, k + 1 + kReceivesAhead); ++receives_posted) {
      received[receives_posted] = receive(offset(receives_posted), length(receives_posted));
    }
    sent[k] = send(offset(k), length(k));
    if (k + 1 >= kPiecesInFlight) {
      wait_all(sent[k + 1 - kPiecesInFlight], comm.timeout());
      wait_all(received[k + 1 - kPiecesInFlight], comm.timeout());
    }
  }
  // The last pieces' requests (the others' lists are empty by now).
  for (std::size_t k = 0; k < pieces; ++k) {
    wait_all(sent[k], comm.timeout());
    wait_all(received[k], comm.timeout());
  }
}

// Sends `bytes` of `mine` to both `left` and `right` and receives what each
// of them sends this way into `from_left` and `from_right`. Uses tags
// first and first + 1 of `tags` (to the right on the first, to the left on
// the second), so that with two ranks, where left and right are one rank,
// the two copies are told apart.
void neighbour_exchange(Communicator& comm, int left, int right, const void* mine, void* from_left, void* from_right,
                        std::size_t bytes, const TagBlock& tags, Tag first);

}  // namespace bagua
