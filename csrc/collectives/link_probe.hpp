// Measuring each rank's link rate at start-up, for plans that size work by
// bandwidth (multi_ring) when no rates are given.
#pragma once

#include <cstddef>
#include <vector>

#include "comm/communicator.hpp"

namespace bagua {

struct LinkProbeOptions {
  // Bytes each pair exchanges in each direction. Large enough that a token
  // bucket's burst (tens of KiB to a few hundred) does not dominate.
  std::size_t bytes = 1u << 20;
  // Exchanged first, untimed, so that connections are set up and warm.
  std::size_t warmup_bytes = 16u << 10;
};

// Every pair of ranks exchanges `bytes` both ways, the pairs of a round at
// once (a round-robin tournament: n - 1 rounds, n for odd n), rounds
// separated by barriers. A pair's rate is the bytes over the slower side's
// time; a rank's rate is the best of its pairs: on a switched network a pair
// runs at the slower of its two links, so a rank's best pair is held back
// only by its own link (the fastest rank sees the second fastest's).
// Collective over every rank of `comm`, with tag `tag`; every rank returns
// the same rates (Mbit/s, indexed by rank).
std::vector<double> probe_link_mbit(Communicator& comm, Tag tag, const LinkProbeOptions& options = {});

}  // namespace bagua
