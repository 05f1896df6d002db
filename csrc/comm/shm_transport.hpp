// Point-to-point messages between ranks of one host over shared-memory
// channels (one ShmChannel per direction and pair), with the Communicator's
// semantics: asynchronous, matched by (peer, tag), FIFO per pair and tag.
//
// Set-up is collective among the host's ranks and needs an out-of-band
// rendezvous (the torch store, see bagua_ravnest/backend.py):
//   1. every rank constructs its transport (creating its incoming channels);
//   2. once all have, every rank calls connect() (opening its outgoing ones);
//   3. once all have, every rank calls unlink_names(), so nothing is left in
//      /dev/shm even if a process is killed later.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.hpp"

namespace bagua {

class ShmTransport {
 public:
  // `peers`: the other ranks on this host. `timeout` bounds each message's
  // copy once it has started, and the set-up.
  ShmTransport(std::string session, int rank, std::vector<int> peers, std::size_t capacity,
               std::chrono::milliseconds timeout);
  // Pending operations fail; the peers' blocked operations on our channels
  // fail at once rather than by their timeout.
  ~ShmTransport();
  ShmTransport(const ShmTransport&) = delete;
  ShmTransport& operator=(const ShmTransport&) = delete;

  // `peer_pids` (rank -> process id) lets a wait notice a peer that died.
  void connect(const std::map<int, long>& peer_pids);
  void unlink_names();

  bool has_peer(int peer) const;
  // The connected peers (empty before connect()).
  std::vector<int> peers() const;
  // `keep_alive` (optional) owns the buffer: the transport holds it until
  // the bytes have moved, so a caller may drop its request (as torch code
  // drops an isend's Work) without the buffer going away under the copy,
  // and lets go of it before the request reports done.
  RequestPtr isend(const void* data, std::size_t bytes, int peer, Tag tag, std::shared_ptr<void> keep_alive = nullptr);
  RequestPtr irecv(void* data, std::size_t bytes, int peer, Tag tag, std::shared_ptr<void> keep_alive = nullptr);

  // Tags with receives waiting or messages not yet received, over all
  // peers: bounded by what is in flight, never by how many tags were used.
  std::size_t tracked_tags() const;

  static std::string channel_name(const std::string& session, int src, int dst);

  struct Link;  // one peer: both channels, queues, threads (shm_transport.cpp)

 private:
  Link& link(int peer) const;

  std::string session_;
  int rank_;
  std::size_t capacity_;
  std::chrono::milliseconds timeout_;
  std::map<int, std::shared_ptr<Link>> links_;
  bool connected_ = false;
};

}  // namespace bagua
