#include "algorithms/algorithm.hpp"

namespace bagua {

const char* role_name(BucketRole role) {
  switch (role) {
    case BucketRole::Gradients: return "gradients";
    case BucketRole::Weights: return "weights";
  }
  return "?";
}

}  // namespace bagua
