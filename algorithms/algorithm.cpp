#include "algorithms/algorithm.hpp"

#include <map>

namespace bagua {

const char* role_name(BucketRole role) {
  switch (role) {
    case BucketRole::Gradients: return "gradients";
    case BucketRole::Weights: return "weights";
    case BucketRole::Buffers: return "buffers";
  }
  return "?";
}

std::vector<std::vector<std::size_t>> one_bucket_per_dtype(const std::vector<TensorInfo>& tensors) {
  std::map<DType, std::vector<std::size_t>> by_dtype;
  for (std::size_t t = 0; t < tensors.size(); ++t) by_dtype[tensors[t].dtype].push_back(t);
  std::vector<std::vector<std::size_t>> out;
  for (auto& [_, members] : by_dtype) out.push_back(std::move(members));
  return out;
}

}  // namespace bagua
