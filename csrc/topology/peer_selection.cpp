#include "topology/peer_selection.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.hpp"

namespace bagua {

std::vector<std::string> peer_mode_names() { return {"all", "shift_one", "ring"}; }

PeerMode peer_mode_from_name(const std::string& name) {
  if (name == "all") return PeerMode::All;
  if (name == "shift_one") return PeerMode::ShiftOne;
  if (name == "ring") return PeerMode::Ring;
  throw InvalidArgument(
      fmt::format("peer_selection_mode '{}' is not one of {}", name, fmt::join(peer_mode_names(), ", ")));
}

const char* peer_mode_name(PeerMode mode) {
  switch (mode) {
    case PeerMode::All: return "all";
    case PeerMode::ShiftOne: return "shift_one";
    case PeerMode::Ring: return "ring";
  }
  return "?";
}

void check_peer_mode(PeerMode mode, int n) {
  if (n < 1) throw InvalidArgument(fmt::format("a peer exchange needs at least one member, got {}", n));
  if (mode == PeerMode::ShiftOne && n % 2 != 0) {
    throw InvalidArgument(fmt::format(
        "peer_selection_mode=shift_one pairs every member with one other each step, which needs an even number of "
        "members; this group has {}. Use peer_selection_mode=ring or all, or an even world size", n));
  }
}

int shift_one_peer(int position, int n, std::uint64_t step) {
  const int half = n / 2;
  const auto s = static_cast<long long>(step % static_cast<std::uint64_t>(half));
  if (position < half) return static_cast<int>((s + position) % half) + half;
  // (p - n/2 - step) mod n/2, kept non-negative.
  return static_cast<int>(((position - half - s) % half + half) % half);
}

}  // namespace bagua
