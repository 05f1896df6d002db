// Which ranks share a host, for hierarchical collectives: reduce inside a
// host over fast links, exchange only between one leader per host.
#pragma once

#include <vector>

namespace bagua {

class HostLayout {
 public:
  // host_of[r] is an arbitrary host key of rank r; ranks with equal keys share
  // a host. Hosts are numbered in order of their lowest rank.
  static HostLayout from_host_keys(const std::vector<long long>& host_of);
  // torchrun's convention: consecutive blocks of local_world_size ranks.
  static HostLayout from_local_world_size(int world_size, int local_world_size);

  int num_hosts() const { return static_cast<int>(members_.size()); }
  int host_of(int rank) const { return host_of_[rank]; }
  // Ranks on `host`, ascending; the first is that host's leader.
  const std::vector<int>& members(int host) const { return members_[host]; }
  int leader(int host) const { return members_[host].front(); }
  std::vector<int> leaders() const;

 private:
  std::vector<int> host_of_;
  std::vector<std::vector<int>> members_;
};

}  // namespace bagua
