// The codecs on CUDA device memory: the same wire bytes as the CPU loops
// (codec.hpp), from kernels that share the CPU's per-value arithmetic
// (element_math.hpp) and header rules (block_rules.hpp). Torch-free and
// CUDA-header-free: pointers are device addresses, a stream is a
// cudaStream_t passed as an integer (0: the legacy default stream).
//
// Built when CMake finds nvcc (BAGUA_CUDA=AUTO, the default); otherwise
// built() is false and every call says how to get a CUDA build.
#pragma once

#include <cstddef>
#include <cstdint>

#include "codec/codec.hpp"

namespace bagua::cuda {

// Whether this build has the CUDA codecs.
bool built();
// CUDA devices usable now (0 without a build, a driver or a device).
int device_count();

// Encodes `count` values of `dtype` (F32, F16 or BF16) at device address
// `in` into codec.wire_bytes(count) bytes at device address `wire`,
// asynchronously on `stream`, on `device` (-1: the current one). `in` is
// aligned to its element size; `wire` may have any alignment. sign1bit sums
// each block's |v| in the CPU's fixed order, which is sequential per lane
// (one warp per block): give it blocks of thousands of values (qadam and
// onebit_adam use 4096), not one block of millions.
void encode(const Codec& codec, const void* in, std::size_t count, DType dtype, std::uint8_t* wire,
            std::uintptr_t stream = 0, int device = -1);

// Checks `wire_size` bytes at device address `wire` and decodes `count`
// fp32 values into (or adds them to) device address `out`. The block codecs
// (minmax_uint8, sign1bit) check every header on the device and synchronize
// `stream` to learn the verdict: malformed input throws ProtocolError naming
// the first bad block, and `out` is not written. The float codecs have no
// headers (the size is checked here) and return without synchronizing.
void decode(const Codec& codec, const std::uint8_t* wire, std::size_t wire_size, std::size_t count, float* out,
            bool accumulate, std::uintptr_t stream = 0, int device = -1);

void synchronize(std::uintptr_t stream = 0);

// Device memory, for tests and benchmarks of the codecs.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  std::size_t size() const { return bytes_; }
  void upload(const void* host, std::size_t bytes);
  void download(void* host, std::size_t bytes) const;
  // Device-to-device copy of `bytes` from `other` (a bandwidth reference).
  void copy_from(const DeviceBuffer& other, std::size_t bytes, std::uintptr_t stream = 0);

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace bagua::cuda
