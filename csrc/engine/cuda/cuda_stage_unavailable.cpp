// make_stage in a build without nvcc (cuda_stage.cpp is the implementation).
#include "engine/cuda/cuda_stage.hpp"

#include "core/error.hpp"

namespace bagua::cuda {

DeviceStagePtr make_stage(int /*device*/) {
  throw Error(
      "this build of bagua_ravnest has no CUDA support: nvcc was not found when it was built; rebuild with the CUDA "
      "toolkit on PATH (or set CUDACXX), BAGUA_CUDA=ON");
}

}  // namespace bagua::cuda
