// How the 32-bit message tag space is shared on one transport, so that the
// messages of different users of one inner backend never match each other.
#pragma once

#include "comm/communicator.hpp"

namespace bagua::tags {

// torch users' send/recv on a "bagua" group: [0, 2^24).
constexpr Tag kUserLimit = 1u << 24;
// A DDP engine's bucket operations: [2^24, 2^25).
constexpr Tag kEngineBase = 1u << 24;
// The backend's ring all-reduce: [2^25, 2^25 + 2^24).
constexpr Tag kBackendBase = 2u << 24;
// An algorithm's own thread (a background loop): [3 * 2^24, 4 * 2^24).
constexpr Tag kAlgorithmThreadBase = 3u << 24;
// Each range wraps around after this many tags; operations that far apart
// are never in flight together.
constexpr Tag kSpan = 1u << 24;
// Tags per operation of an engine, the backend or an algorithm's thread.
constexpr Tag kPerOperation = 16;
// One-off exchanges while a backend or engine is set up (the link probe),
// before any operation of its own: the last tag of the backend's range.
constexpr Tag kSetup = kAlgorithmThreadBase - 1;

}  // namespace bagua::tags
