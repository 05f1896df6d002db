// The CUDA codecs' entry points in a build without nvcc: they report that
// the build has none (cuda_codec.cu is the implementation).
#include "codec/cuda/cuda_codec.hpp"
#include "core/error.hpp"

namespace bagua::cuda {
namespace {
[[noreturn]] void unavailable() {
  throw Error(
      "this build of bagua_ravnest has no CUDA codecs: nvcc was not found when it was built; rebuild with the CUDA "
      "toolkit on PATH (or set CUDACXX), BAGUA_CUDA=ON");
}
}  // namespace

bool built() { return false; }
int device_count() { return 0; }
void encode(const Codec&, const void*, std::size_t, DType, std::uint8_t*, std::uintptr_t, int) { unavailable(); }
void decode(const Codec&, const std::uint8_t*, std::size_t, std::size_t, float*, bool, std::uintptr_t, int) {
  unavailable();
}
void synchronize(std::uintptr_t) { unavailable(); }
DeviceBuffer::DeviceBuffer(std::size_t) { unavailable(); }
DeviceBuffer::~DeviceBuffer() = default;
void DeviceBuffer::upload(const void*, std::size_t) { unavailable(); }
void DeviceBuffer::download(void*, std::size_t) const { unavailable(); }
void DeviceBuffer::copy_from(const DeviceBuffer&, std::size_t, std::uintptr_t) { unavailable(); }

}  // namespace bagua::cuda
