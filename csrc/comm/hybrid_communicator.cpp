#include "comm/hybrid_communicator.hpp"

#include "core/error.hpp"

namespace bagua {

HybridCommunicator::HybridCommunicator(CommunicatorPtr network, std::shared_ptr<ShmTransport> shm)
    : Communicator(network ? network->timeout() : std::chrono::milliseconds(0)),
      network_(std::move(network)),
      shm_(std::move(shm)) {
  if (!network_) throw InvalidArgument("HybridCommunicator needs a network communicator");
}

// Empty messages are not sent on either path (as C10dCommunicator does), so
// both ends agree whichever transport a pair uses.
RequestPtr HybridCommunicator::isend(const void* data, std::size_t bytes, int peer, Tag tag) {
  if (bytes == 0) return std::make_shared<CompletedRequest>();
  return shared_memory_to(peer) ? shm_->isend(data, bytes, peer, tag) : network_->isend(data, bytes, peer, tag);
}

RequestPtr HybridCommunicator::irecv(void* data, std::size_t bytes, int peer, Tag tag) {
  if (bytes == 0) return std::make_shared<CompletedRequest>();
  return shared_memory_to(peer) ? shm_->irecv(data, bytes, peer, tag) : network_->irecv(data, bytes, peer, tag);
}

}  // namespace bagua
