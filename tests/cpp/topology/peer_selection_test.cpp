#include "topology/peer_selection.hpp"

#include <gtest/gtest.h>

#include <algorithm>

#include "core/error.hpp"

namespace bagua {

TEST(PeerSelection, ShiftOnePairsSymmetricallyAndShifts) {
  for (int n : {2, 4, 6, 8}) {
    for (std::uint64_t step = 0; step < 12; ++step) {
      for (int p = 0; p < n; ++p) {
        const int q = shift_one_peer(p, n, step);
        ASSERT_GE(q, 0);
        ASSERT_LT(q, n);
        // One half pairs with the other, and the pairing is mutual.
        EXPECT_NE(p < n / 2, q < n / 2);
        EXPECT_EQ(shift_one_peer(q, n, step), p) << "n=" << n << " step=" << step << " p=" << p;
      }
    }
    // Over n/2 steps position 0 meets every member of the other half once.
    std::vector<int> met;
    for (std::uint64_t step = 0; step < static_cast<std::uint64_t>(n / 2); ++step) met.push_back(shift_one_peer(0, n, step));
    std::sort(met.begin(), met.end());
    for (int i = 0; i < n / 2; ++i) EXPECT_EQ(met[i], n / 2 + i);
  }
  EXPECT_EQ(shift_one_peer(0, 4, 1), 3);  // ((1 + 0) mod 2) + 2
  EXPECT_EQ(shift_one_peer(3, 4, 1), 0);  // (3 - 2 - 1) mod 2
}

TEST(PeerSelection, OddShiftOneIsAnErrorThatSaysWhy) {
  EXPECT_NO_THROW(check_peer_mode(PeerMode::ShiftOne, 4));
  EXPECT_NO_THROW(check_peer_mode(PeerMode::Ring, 3));
  try {
    check_peer_mode(PeerMode::ShiftOne, 3);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("even number"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("3"), std::string::npos);
  }
  EXPECT_THROW(peer_mode_from_name("star"), InvalidArgument);
  EXPECT_EQ(peer_mode_from_name("ring"), PeerMode::Ring);
}

}  // namespace bagua
