#include "collectives/agree.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/error.hpp"

namespace bagua {

void check_same_link_mbit(Communicator& comm, const std::vector<double>& rates) {
  const int n = comm.size();
  // The count first, so that ranks with different counts fail cleanly.
  std::uint64_t mine = rates.size();
  std::vector<std::uint64_t> counts(n);
  comm.allgather(&mine, counts.data(), sizeof(mine))->wait(comm.timeout());
  for (int r = 0; r < n; ++r) {
    if (counts[r] != mine) {
      throw InvalidArgument(fmt::format("rank {} has {} link rates and rank {} has {}: give every rank the same "
                                        "BAGUA_LINK_MBIT (or none, to measure)",
                                        comm.rank(), mine, r, counts[r]));
    }
  }
  if (rates.empty()) return;
  std::vector<double> all(rates.size() * n);
  comm.allgather(rates.data(), all.data(), rates.size() * sizeof(double))->wait(comm.timeout());
  for (int r = 0; r < n; ++r) {
    if (std::memcmp(all.data() + r * rates.size(), rates.data(), rates.size() * sizeof(double)) != 0) {
      throw InvalidArgument(fmt::format("rank {} has link rates {} but rank {} has {}: give every rank the same "
                                        "BAGUA_LINK_MBIT",
                                        comm.rank(), fmt::join(rates, ","), r,
                                        fmt::join(all.begin() + r * rates.size(), all.begin() + (r + 1) * rates.size(), ",")));
    }
  }
}

int min_over_ranks(Communicator& comm, int value) {
  std::int64_t mine = value;
  std::vector<std::int64_t> all(comm.size());
  comm.allgather(&mine, all.data(), sizeof(mine))->wait(comm.timeout());
  return static_cast<int>(*std::min_element(all.begin(), all.end()));
}

}  // namespace bagua
