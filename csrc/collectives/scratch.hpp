// Per-thread reusable scratch memory, so a collective on a hot path does not
// allocate and fault in a fresh buffer every call.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bagua {

// At least `bytes` bytes, valid until the next call on the same thread.
std::uint8_t* thread_scratch(std::size_t bytes);

}  // namespace bagua
