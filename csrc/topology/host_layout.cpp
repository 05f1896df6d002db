#include "topology/host_layout.hpp"

#include <fmt/format.h>

#include <map>

#include "core/error.hpp"

namespace bagua {

HostLayout HostLayout::from_host_keys(const std::vector<long long>& keys) {
  if (keys.empty()) throw InvalidArgument("HostLayout: no ranks");
  HostLayout layout;
  std::map<long long, int> host_index;
  layout.host_of_.resize(keys.size());
  for (std::size_t r = 0; r < keys.size(); ++r) {
    auto [it, fresh] = host_index.try_emplace(keys[r], layout.num_hosts());
    if (fresh) layout.members_.emplace_back();
    layout.host_of_[r] = it->second;
    layout.members_[it->second].push_back(static_cast<int>(r));
  }
  return layout;
}

HostLayout HostLayout::from_local_world_size(int world_size, int local_world_size) {
  if (world_size < 1 || local_world_size < 1 || world_size % local_world_size != 0) {
    throw InvalidArgument(fmt::format(
        "LOCAL_WORLD_SIZE={} does not divide the world size {}: set it to the number of ranks per host",
        local_world_size, world_size));
  }
  std::vector<long long> keys(world_size);
  for (int r = 0; r < world_size; ++r) keys[r] = r / local_world_size;
  return from_host_keys(keys);
}

std::vector<int> HostLayout::leaders() const {
  std::vector<int> out;
  for (const auto& m : members_) out.push_back(m.front());
  return out;
}

}  // namespace bagua
