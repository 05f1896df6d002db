#include "collectives/link_probe.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "core/error.hpp"

namespace bagua {
namespace {

// Partner of `rank` in round `round` of a round-robin tournament among
// `players` (even) players; the last player stays put, the others rotate.
int partner(int rank, int round, int players) {
  const int m = players - 1;
  if (rank == m) return round;
  if (rank == round) return m;
  return ((2 * round - rank) % m + m) % m;
}

double exchange_seconds(Communicator& comm, int peer, std::uint8_t* out, std::uint8_t* in, std::size_t bytes,
                        Tag tag) {
  const auto start = std::chrono::steady_clock::now();
  RequestPtr recv = comm.irecv(in, bytes, peer, tag);
  RequestPtr send = comm.isend(out, bytes, peer, tag);
  send->wait(comm.timeout());
  recv->wait(comm.timeout());
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

std::vector<double> probe_link_mbit(Communicator& comm, Tag tag, const LinkProbeOptions& options) {
  const int n = comm.size();
  const int me = comm.rank();
  if (n == 1) return {0.0};
  if (options.bytes == 0) throw InvalidArgument("link probe: bytes must be positive");
  const int players = n % 2 ? n + 1 : n;  // odd n: one rank sits out each round
  std::vector<std::uint8_t> out(std::max(options.bytes, options.warmup_bytes), 0x5a), in(out.size());
  std::vector<double> seconds(n, 0.0);  // my time with each peer
  for (int round = 0; round < players - 1; ++round) {
    const int peer = partner(me, round, players);
    comm.barrier()->wait(comm.timeout());
    if (peer >= n) continue;
    if (options.warmup_bytes) exchange_seconds(comm, peer, out.data(), in.data(), options.warmup_bytes, tag);
    seconds[peer] = exchange_seconds(comm, peer, out.data(), in.data(), options.bytes, tag);
  }
  std::vector<double> all(static_cast<std::size_t>(n) * n);
  comm.allgather(seconds.data(), all.data(), n * sizeof(double))->wait(comm.timeout());
  std::vector<double> rates(n, 0.0);
  const double megabits = double(options.bytes) * 8 / 1e6;
  for (int p = 0; p < n; ++p) {
    for (int q = 0; q < n; ++q) {
      if (p == q) continue;
      const double t = std::max(all[p * n + q], all[q * n + p]);
      if (t > 0) rates[p] = std::max(rates[p], megabits / t);
    }
  }
  return rates;
}

}  // namespace bagua
