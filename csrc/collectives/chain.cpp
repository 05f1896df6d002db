#include "collectives/chain.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>

#include "collectives/scratch.hpp"
#include "core/error.hpp"
#include "topology/ring.hpp"

namespace bagua {
namespace {

int position_in(const std::vector<int>& chain, int rank, const char* what) {
  auto it = std::find(chain.begin(), chain.end(), rank);
  if (it == chain.end()) throw InvalidArgument(fmt::format("{}: rank {} is not in the chain", what, rank));
  return static_cast<int>(it - chain.begin());
}

}  // namespace

void chain_broadcast(Communicator& comm, const std::vector<int>& chain, void* data, std::size_t bytes, Tag tag,
                     std::size_t chunk_bytes) {
  const int p = position_in(chain, comm.rank(), "chain_broadcast");
  const int n = static_cast<int>(chain.size());
  if (n == 1 || bytes == 0) return;
  auto* base = static_cast<std::uint8_t*>(data);
  const auto pieces = split({0, bytes}, std::max<std::size_t>(1, chunk_bytes));
  const auto timeout = comm.timeout();
  std::vector<RequestPtr> recvs, sends;
  if (p > 0) {
    for (const auto& piece : pieces) recvs.push_back(comm.irecv(base + piece.offset, piece.count, chain[p - 1], tag));
  }
  for (std::size_t k = 0; k < pieces.size(); ++k) {
    if (p > 0) recvs[k]->wait(timeout);
    if (p + 1 < n) sends.push_back(comm.isend(base + pieces[k].offset, pieces[k].count, chain[p + 1], tag));
  }
  for (auto& s : sends) s->wait(timeout);
}

void chain_reduce(Communicator& comm, const std::vector<int>& chain, void* data, std::size_t count, DType dtype,
                  ReduceOp op, Tag tag, std::size_t chunk_bytes) {
  const int p = position_in(chain, comm.rank(), "chain_reduce");
  const int n = static_cast<int>(chain.size());
  if (n == 1 || count == 0) return;
  const std::size_t elem = dtype_size(dtype);
  auto* base = static_cast<std::uint8_t*>(data);
  const auto pieces = split({0, count}, std::max<std::size_t>(1, chunk_bytes / elem));
  const auto timeout = comm.timeout();
  // Partial sums flow from the end of the chain towards chain[0].
  const bool has_upstream = p + 1 < n;
  std::uint8_t* scratch = has_upstream ? thread_scratch(count * elem) : nullptr;
  std::vector<RequestPtr> recvs, sends;
  if (has_upstream) {
    for (const auto& piece : pieces) {
      recvs.push_back(comm.irecv(scratch + piece.offset * elem, piece.count * elem, chain[p + 1], tag));
    }
  }
  for (std::size_t k = 0; k < pieces.size(); ++k) {
    std::uint8_t* mine = base + pieces[k].offset * elem;
    if (has_upstream) {
      recvs[k]->wait(timeout);
      reduce_into(mine, scratch + pieces[k].offset * elem, pieces[k].count, dtype, op);
    }
    if (p > 0) sends.push_back(comm.isend(mine, pieces[k].count * elem, chain[p - 1], tag));
  }
  for (auto& s : sends) s->wait(timeout);
}

}  // namespace bagua
