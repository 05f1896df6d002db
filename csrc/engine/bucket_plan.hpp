// DDP's bucketing rule: walk tensors in reverse registration order (roughly
// the order backward produces their gradients), keep one open bucket per
// dtype, and close a bucket once it holds at least the current cap. The first
// bucket closed uses a small cap so communication starts early.
#pragma once

#include <vector>

#include "algorithms/algorithm.hpp"

namespace bagua {

std::vector<std::vector<std::size_t>> plan_buckets(const std::vector<TensorInfo>& tensors,
                                                   const BucketingOptions& options);

}  // namespace bagua
