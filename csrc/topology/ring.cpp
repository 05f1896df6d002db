#include "topology/ring.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "core/error.hpp"

namespace bagua {
namespace {
int mod(int a, int n) { return ((a % n) + n) % n; }
}  // namespace

Ring Ring::natural(int n) {
  if (n < 1) throw InvalidArgument(fmt::format("a ring needs at least one rank, got {}", n));
  Ring r;
  r.ranks.resize(n);
  for (int i = 0; i < n; ++i) r.ranks[i] = i;
  return r;
}

Ring Ring::of(std::vector<int> members) {
  if (members.empty()) throw InvalidArgument("a ring needs at least one rank");
  std::set<int> seen;
  for (int m : members) {
    if (m < 0) throw InvalidArgument(fmt::format("ring member {} is negative", m));
    if (!seen.insert(m).second) throw InvalidArgument(fmt::format("rank {} appears twice in the ring", m));
  }
  return Ring{std::move(members)};
}

int Ring::position_of(int rank) const {
  auto it = std::find(ranks.begin(), ranks.end(), rank);
  return it == ranks.end() ? -1 : static_cast<int>(it - ranks.begin());
}

std::vector<Segment> partition(std::size_t count, int parts) {
  if (parts < 1) throw InvalidArgument(fmt::format("cannot partition into {} parts", parts));
  std::vector<Segment> out(parts);
  const std::size_t base = count / parts;
  const std::size_t extra = count % parts;
  std::size_t offset = 0;
  for (int i = 0; i < parts; ++i) {
    out[i].offset = offset;
    out[i].count = base + (static_cast<std::size_t>(i) < extra ? 1 : 0);
    offset += out[i].count;
  }
  return out;
}

std::vector<Segment> split(Segment s, std::size_t max_count) {
  if (max_count == 0) throw InvalidArgument("split: max_count must be positive");
  std::vector<Segment> out;
  if (s.count == 0) {
    out.push_back(s);
    return out;
  }
  for (std::size_t done = 0; done < s.count; done += max_count) {
    out.push_back({s.offset + done, std::min(max_count, s.count - done)});
  }
  return out;
}

RingStep reduce_scatter_step(int position, int n, int step) {
  return {mod(position - step, n), mod(position - step - 1, n)};
}

int owned_segment(int position, int n) { return mod(position + 1, n); }

RingStep allgather_step(int position, int n, int step) {
  return {mod(position + 1 - step, n), mod(position - step, n)};
}

}  // namespace bagua
