// Making sure every rank builds the same plan from its own inputs: checks
// and reductions over small values, at set-up time.
#pragma once

#include <vector>

#include "comm/communicator.hpp"

namespace bagua {

// Checks that every rank of `comm` holds the same `rates` (a user may set
// BAGUA_LINK_MBIT differently on two hosts); the error names a rank that
// differs and what it has.
void check_same_link_mbit(Communicator& comm, const std::vector<double>& rates);

// The smallest of every rank's `value` (hosts may differ in cores, say).
int min_over_ranks(Communicator& comm, int value);

}  // namespace bagua
