#include "collectives/scratch.hpp"

#include <vector>

namespace bagua {

std::uint8_t* thread_scratch(std::size_t bytes) {
  thread_local std::vector<std::uint8_t> buffer;
  if (buffer.size() < bytes) buffer.resize(bytes);
  return buffer.data();
}

}  // namespace bagua
