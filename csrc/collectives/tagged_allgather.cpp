#include "collectives/tagged_allgather.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>

#include "core/error.hpp"

namespace bagua {

void tagged_allgather(Communicator& comm, const std::vector<int>& members, const void* mine, void* all,
                      std::size_t bytes, Tag tag) {
  const auto it = std::find(members.begin(), members.end(), comm.rank());
  if (it == members.end()) throw InvalidArgument(fmt::format("tagged_allgather: rank {} is not a member", comm.rank()));
  const auto self = static_cast<std::size_t>(it - members.begin());
  auto* out = static_cast<std::uint8_t*>(all);
  std::memcpy(out + self * bytes, mine, bytes);
  std::vector<RequestPtr> sends, recvs(members.size());
  for (std::size_t i = 0; i < members.size(); ++i) {
    if (i == self) continue;
    recvs[i] = comm.irecv(out + i * bytes, bytes, members[i], tag);
    sends.push_back(comm.isend(mine, bytes, members[i], tag));
  }
  // One deadline for all: a silent member costs the timeout once, and every
  // other silent member is named in the same error.
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + comm.timeout();
  std::vector<std::string> silent;
  for (std::size_t i = 0; i < members.size(); ++i) {
    if (!recvs[i]) continue;
    const auto left = std::max(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()),
                               std::chrono::milliseconds(0));
    try {
      recvs[i]->wait(left);
    } catch (const Error& e) {
      silent.push_back(fmt::format("rank {} ({})", members[i], e.what()));
    }
  }
  if (!silent.empty()) {
    throw TimeoutError(fmt::format("no record within {} ms from {}", comm.timeout().count(), fmt::join(silent, "; ")));
  }
  wait_all(sends, comm.timeout());
}

}  // namespace bagua
