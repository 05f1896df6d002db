// Per-rank link rates given by hand, as in BAGUA_LINK_MBIT=1000,1000,100,20:
// rank r's link (both directions) runs at the r-th rate, in Mbit/s.
#pragma once

#include <string_view>
#include <vector>

namespace bagua {

// Parses a comma-separated list of positive rates, one per rank of a group
// of `size`. `source` names where the text came from, for the error.
std::vector<double> parse_link_mbit(std::string_view text, int size, std::string_view source = "BAGUA_LINK_MBIT");

}  // namespace bagua
