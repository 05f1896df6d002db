// Who averages with whom in decentralized training (docs/decentralized.md):
// every rank (all), one partner that changes every step
// (shift_one), or both ring neighbours (ring). Positions are indices into a
// group of n members (all ranks, or the host leaders).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bagua {

enum class PeerMode { All, ShiftOne, Ring };

PeerMode peer_mode_from_name(const std::string& name);  // throws, listing the modes
const char* peer_mode_name(PeerMode mode);
std::vector<std::string> peer_mode_names();

// Throws, saying why, when `mode` cannot pair n positions (shift_one needs
// an even n; every mode needs n >= 1).
void check_peer_mode(PeerMode mode, int n);

// shift_one's partner of `position` at `step`: positions below n/2 pair with
// ((step + p) mod n/2) + n/2, the others with (p - n/2 - step) mod n/2; the
// pairing is symmetric and changes every step.
int shift_one_peer(int position, int n, std::uint64_t step);

}  // namespace bagua
