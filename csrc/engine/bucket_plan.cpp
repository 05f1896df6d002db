#include "engine/bucket_plan.hpp"

#include <map>

#include "core/error.hpp"

namespace bagua {

std::vector<std::vector<std::size_t>> plan_buckets(const std::vector<TensorInfo>& tensors,
                                                   const BucketingOptions& options) {
  if (options.cap_bytes == 0 || options.first_cap_bytes == 0) {
    throw InvalidArgument("bucket caps must be positive; pass bucket_cap_mb > 0");
  }
  struct Open {
    std::vector<std::size_t> indices;
    std::size_t bytes = 0;
  };
  std::map<DType, Open> open;
  std::vector<std::vector<std::size_t>> closed;
  for (std::size_t i = tensors.size(); i-- > 0;) {
    Open& b = open[tensors[i].dtype];
    b.indices.push_back(i);
    b.bytes += tensors[i].numel * dtype_size(tensors[i].dtype);
    const std::size_t cap = closed.empty() ? options.first_cap_bytes : options.cap_bytes;
    if (b.bytes >= cap) {
      closed.push_back(std::move(b.indices));
      b = Open{};
    }
  }
  for (auto& [_, b] : open) {
    if (!b.indices.empty()) closed.push_back(std::move(b.indices));
  }
  return closed;
}

}  // namespace bagua
