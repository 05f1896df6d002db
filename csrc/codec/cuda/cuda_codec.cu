// CUDA kernels of the codecs (cuda_codec.hpp). Every value is computed by
// the functions the CPU loops use (element_math.hpp, core/float16.hpp) and
// every reduction that decides a header is either exact in any order
// (min, max) or done in the CPU's fixed order (sign1bit's 16-lane |v| sum);
// nvcc runs with -fmad=false so no multiply-add is fused. The wire layout
// comes from the codec object itself (BlockCodec::block_for, payload_size).
// No fmt here: nvcc's C++20 front end rejects its compile-time format checks.
#include <cuda_runtime.h>
#include <string>

#include "codec/block_codec.hpp"
#include "codec/block_rules.hpp"
#include "codec/cuda/cuda_codec.hpp"
#include "codec/element_math.hpp"
#include "codec/float_codecs.hpp"
#include "codec/minmax_uint8.hpp"
#include "codec/sign1bit.hpp"
#include "core/error.hpp"

namespace bagua::cuda {
namespace {

constexpr int kThreads = 256;
// Values per CUDA block in minmax_uint8's min/max pass: long codec blocks
// are cut into tiles whose results are combined per codec block.
constexpr std::size_t kTile = 8192;
// sign1bit's |v| sum runs in element_math's lane order: kernels::kLanes
// sequential partial sums, then a pairwise tree.
constexpr int kLanes = static_cast<int>(kernels::kLanes);
static_assert(kLanes <= 32, "one warp holds the lanes");

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("CUDA ") + what + ": " + cudaGetErrorString(e));
}

cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

unsigned grid_for(std::size_t items, int threads = kThreads) {
  const std::size_t blocks = (items + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65535 * 16 ? (blocks ? blocks : 1) : 65535 * 16);
}

// The blocks of one call: block b holds values [b * block, b * block + n_b)
// and starts at byte b * stride of the wire.
struct Layout {
  std::size_t count, block, stride, blocks;
  __host__ __device__ std::size_t values_in(std::size_t b) const {
    const std::size_t start = b * block;
    return count - start < block ? count - start : block;
  }
};

Layout layout_of(const BlockCodec& c, std::size_t count) {
  const std::size_t block = c.block_for(count);
  return Layout{count, block, BlockHeader::kBytes + c.payload_size(block), (count + block - 1) / block};
}

__device__ float load(const void* in, DType dtype, std::size_t i) {
  switch (dtype) {
    case DType::F16: return half_to_float(static_cast<const std::uint16_t*>(in)[i]);
    case DType::BF16: return bf16_to_float(static_cast<const std::uint16_t*>(in)[i]);
    default: return static_cast<const float*>(in)[i];
  }
}

// Scratch device memory for one call, freed in stream order.
class StreamScratch {
 public:
  StreamScratch(std::size_t bytes, cudaStream_t s) : stream_(s) {
    check(cudaMallocAsync(&ptr_, bytes ? bytes : 1, s), "cudaMallocAsync");
  }
  ~StreamScratch() { cudaFreeAsync(ptr_, stream_); }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;
  template <class T>
  T* at(std::size_t byte_offset) const {
    return reinterpret_cast<T*>(static_cast<char*>(ptr_) + byte_offset);
  }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

std::size_t align_up(std::size_t b) { return (b + 255) & ~std::size_t{255}; }

// ---- checked decoding: the first faulty block, reported from the device ----

// (block index << 8 | fault), the smallest index wins; ~0 when all are valid.
using FaultWord = unsigned long long;
constexpr FaultWord kNoFault = ~0ull;

__device__ void report(FaultWord* first, std::size_t b, BlockFault f) {
  atomicMin(first, (static_cast<FaultWord>(b) << 8) | static_cast<FaultWord>(f));
}

void raise_fault(const Codec& c, FaultWord w, const Layout& l) {
  const std::size_t b = static_cast<std::size_t>(w >> 8);
  throw ProtocolError(c.name() + ": block at value " + std::to_string(b * l.block) + ": " +
                      block_fault_text(static_cast<BlockFault>(w & 0xff)));
}

// Per block, what decoding needs: minmax_uint8 lo and step, sign1bit the
// scale's bits; `non_finite` blocks decode to NaN.
struct BlockParams {
  float a;
  float b;
  std::uint32_t non_finite;
};

template <class Rule>
__global__ void check_blocks(const std::uint8_t* wire, Layout l, Rule rule, BlockParams* params, FaultWord* first) {
  for (std::size_t b = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < l.blocks; b += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t n = l.values_in(b);
    const std::uint8_t* p = wire + b * l.stride;
    const BlockHeader h = BlockHeader::read(p);
    BlockFault f = frame_fault(h, n);
    if (f == BlockFault::None) f = rule(h, p + BlockHeader::kBytes, n, params[b]);
    if (f != BlockFault::None) report(first, b, f);
  }
}

struct MinMaxRule {
  __device__ BlockFault operator()(const BlockHeader& h, const std::uint8_t*, std::size_t, BlockParams& out) const {
    const BlockFault f = minmax_fault(h);
    const bool nf = (h.flags & BlockHeader::kNonFinite) != 0;
    out = BlockParams{h.a, nf || f != BlockFault::None ? 0.0f : element::minmax_step(h.a, h.b), nf ? 1u : 0u};
    return f;
  }
};

struct SignRule {
  __device__ BlockFault operator()(const BlockHeader& h, const std::uint8_t* payload, std::size_t n,
                                   BlockParams& out) const {
    out = BlockParams{h.a, 0.0f, (h.flags & BlockHeader::kNonFinite) ? 1u : 0u};
    return sign_fault(h, n, n % 8 ? payload[n / 8] : 0);
  }
};

// Accumulating into a NaN (or adding one) gives a NaN whose payload differs
// between the GPU (always 0x7fffffff) and x86; codec.hpp leaves it unspecified.
__device__ void store(float* out, std::size_t i, float v, bool accumulate) {
  out[i] = accumulate ? out[i] + v : v;
}

__global__ void dequantize(const std::uint8_t* wire, Layout l, const BlockParams* params, float* out, bool accumulate,
                           const FaultWord* first) {
  if (*first != kNoFault) return;  // invalid input: write nothing
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < l.count; i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t b = i / l.block;
    const BlockParams& p = params[b];
    if (p.non_finite) {
      out[i] = bits_float(0x7fc00000u);  // the CPU's quiet NaN
      continue;
    }
    const std::uint8_t q = wire[b * l.stride + BlockHeader::kBytes + (i - b * l.block)];
    store(out, i, element::dequantize_u8(q, p.a, p.b), accumulate);
  }
}

__global__ void sign_unpack(const std::uint8_t* wire, Layout l, const BlockParams* params, float* out,
                            bool accumulate, const FaultWord* first) {
  if (*first != kNoFault) return;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < l.count; i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t b = i / l.block;
    const BlockParams& p = params[b];
    if (p.non_finite) {
      out[i] = bits_float(0x7fc00000u);  // the CPU's quiet NaN
      continue;
    }
    const std::size_t k = i - b * l.block;
    const std::uint32_t byte = wire[b * l.stride + BlockHeader::kBytes + k / 8];
    store(out, i, element::signed_scale(float_bits(p.a), byte >> (k % 8)), accumulate);
  }
}

// ---- minmax_uint8 encoding: tile min/max, per-block headers, codes ----------

struct TileRange {
  float lo, hi;
  std::uint32_t bad;
};

__global__ void tile_ranges(const void* in, DType dtype, Layout l, std::size_t tiles_per_block, TileRange* tiles,
                            std::size_t num_tiles) {
  __shared__ float lo_s[kThreads], hi_s[kThreads];
  __shared__ std::uint32_t bad_s[kThreads];
  for (std::size_t t = blockIdx.x; t < num_tiles; t += gridDim.x) {
    const std::size_t b = t / tiles_per_block, start = b * l.block + (t % tiles_per_block) * kTile;
    const std::size_t end_block = b * l.block + l.values_in(b);
    const std::size_t end = start + kTile < end_block ? start + kTile : end_block;
    // Any order gives the same min and max of finite values (signed zeros
    // are normalized after); NaN and Inf are flagged from the bits.
    float lo = bits_float(0x7f800000u), hi = -lo;  // +Inf, -Inf
    std::uint32_t bad = 0;
    for (std::size_t i = start + threadIdx.x; i < end; i += blockDim.x) {
      const float x = load(in, dtype, i);
      lo = x < lo ? x : lo;
      hi = x > hi ? x : hi;
      bad |= element::non_finite(x) ? 1u : 0u;
    }
    lo_s[threadIdx.x] = lo;
    hi_s[threadIdx.x] = hi;
    bad_s[threadIdx.x] = bad;
    __syncthreads();
    for (int w = kThreads / 2; w > 0; w /= 2) {
      if (threadIdx.x < w) {
        lo_s[threadIdx.x] = lo_s[threadIdx.x + w] < lo_s[threadIdx.x] ? lo_s[threadIdx.x + w] : lo_s[threadIdx.x];
        hi_s[threadIdx.x] = hi_s[threadIdx.x + w] > hi_s[threadIdx.x] ? hi_s[threadIdx.x + w] : hi_s[threadIdx.x];
        bad_s[threadIdx.x] |= bad_s[threadIdx.x + w];
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) tiles[t] = TileRange{lo_s[0], hi_s[0], bad_s[0]};
    __syncthreads();
  }
}

// One thread per codec block: its range from its tiles, its header, and the
// constants of its codes (lo, scale; non_finite blocks get zero codes).
__global__ void minmax_headers(Layout l, std::size_t tiles_per_block, const TileRange* tiles, std::uint8_t* wire,
                               BlockParams* params) {
  for (std::size_t b = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < l.blocks; b += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t n = l.values_in(b), num = (n + kTile - 1) / kTile;
    float lo = tiles[b * tiles_per_block].lo, hi = tiles[b * tiles_per_block].hi;
    std::uint32_t bad = tiles[b * tiles_per_block].bad;
    for (std::size_t t = 1; t < num; ++t) {
      const TileRange& r = tiles[b * tiles_per_block + t];
      lo = r.lo < lo ? r.lo : lo;
      hi = r.hi > hi ? r.hi : hi;
      bad |= r.bad;
    }
    lo += 0.0f;  // -0 -> +0, as the CPU's min_max reports it
    hi += 0.0f;
    BlockHeader h;
    h.count = static_cast<std::uint32_t>(n);
    if (bad || !element::minmax_range_fits(lo, hi)) {
      h.flags = BlockHeader::kNonFinite;
      params[b] = BlockParams{0.0f, 0.0f, 1u};
    } else {
      h.a = lo;
      h.b = hi;
      params[b] = BlockParams{lo, element::minmax_scale(lo, hi), 0u};
    }
    h.write(wire + b * l.stride);
  }
}

__global__ void quantize(const void* in, DType dtype, Layout l, const BlockParams* params, std::uint8_t* wire) {
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < l.count; i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t b = i / l.block;
    const BlockParams& p = params[b];
    wire[b * l.stride + BlockHeader::kBytes + (i - b * l.block)] =
        p.non_finite ? 0 : element::quantize_u8(load(in, dtype, i), p.a, p.b);
  }
}

// ---- sign1bit encoding: scales one warp per codec block, then the bits ------

// The header of each block: its scale, the mean |v| summed in the CPU's
// order (sequential lanes: a warp per block, whatever the block's length).
__global__ void sign_headers(const void* in, DType dtype, Layout l, std::uint8_t* wire) {
  __shared__ float lanes[kLanes];
  for (std::size_t b = blockIdx.x; b < l.blocks; b += gridDim.x) {
    const std::size_t n = l.values_in(b), base = b * l.block, full = n - n % kLanes;
    const int j = threadIdx.x;
    if (j < kLanes) {
      // Lane j: |v[j]| + |v[j + 16]| + ... in sequence, then the tail value
      // full + j: kernels_body.inc's sum_abs, term by term.
      float s = 0.0f;
      for (std::size_t i = j; i < full; i += kLanes) s += fabsf(load(in, dtype, base + i));
      if (full + j < n) s += fabsf(load(in, dtype, base + full + j));
      lanes[j] = s;
    }
    __syncthreads();
    for (int width = kLanes / 2; width > 0; width /= 2) {
      if (j < width) lanes[j] += lanes[j + width];
      __syncthreads();
    }
    if (j == 0) {
      const float sum = lanes[0];
      BlockHeader h;
      h.count = static_cast<std::uint32_t>(n);
      if (element::non_finite(sum)) {
        h.flags = BlockHeader::kNonFinite;
      } else {
        h.a = sum / static_cast<float>(n);
      }
      h.write(wire + b * l.stride);
    }
    __syncthreads();  // lanes are rewritten for the next block
  }
}

// One thread per payload byte of every block; a flagged block's bytes are 0,
// as are the padding bits of a block's last byte.
__global__ void sign_bits(const void* in, DType dtype, Layout l, std::uint8_t* wire) {
  const std::size_t per_block = (l.block + 7) / 8;
  const std::size_t total = (l.blocks - 1) * per_block + (l.values_in(l.blocks - 1) + 7) / 8;
  for (std::size_t g = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < total;
       g += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t b = g / per_block, k = g % per_block, n = l.values_in(b), base = b * l.block;
    std::uint8_t* p = wire + b * l.stride;
    const BlockHeader h = BlockHeader::read(p);
    std::uint32_t byte = 0;
    if (!(h.flags & BlockHeader::kNonFinite)) {
      for (std::size_t q = 0; q < 8 && 8 * k + q < n; ++q) {
        byte |= static_cast<std::uint32_t>(load(in, dtype, base + 8 * k + q) >= 0.0f) << q;
      }
    }
    p[BlockHeader::kBytes + k] = static_cast<std::uint8_t>(byte);
  }
}

// ---- fp32 / fp16 / bf16 on the wire -----------------------------------------

// The wire is a byte array of any alignment (a chunk of a larger receive
// buffer, say): its values are moved with memcpy, as on the CPU.
__global__ void float_encode(const void* in, DType dtype, std::size_t count, DType wire_dtype, std::uint8_t* wire) {
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float x = load(in, dtype, i);
    if (wire_dtype == DType::F32) {
      memcpy(wire + 4 * i, &x, 4);
    } else {
      const std::uint16_t h = wire_dtype == DType::F16 ? float_to_half(x) : float_to_bf16(x);
      memcpy(wire + 2 * i, &h, 2);
    }
  }
}

__global__ void float_decode(const std::uint8_t* wire, DType wire_dtype, std::size_t count, float* out,
                             bool accumulate) {
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    float v;
    if (wire_dtype == DType::F32) {
      memcpy(&v, wire + 4 * i, 4);
    } else {
      std::uint16_t h;
      memcpy(&h, wire + 2 * i, 2);
      v = wire_dtype == DType::F16 ? half_to_float(h) : bf16_to_float(h);
    }
    store(out, i, v, accumulate);
  }
}

void check_aligned(const void* p, std::size_t align, const char* what) {
  if (reinterpret_cast<std::uintptr_t>(p) % align) {
    throw InvalidArgument(std::string("CUDA codecs: ") + what + " must be aligned to " + std::to_string(align) +
                          " bytes");
  }
}

void check_input(DType dtype) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16) {
    throw InvalidArgument("codecs encode fp32, fp16 or bf16 values, not " + std::string(dtype_name(dtype)));
  }
}

// Makes `device` current for one call and restores the caller's device.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (device < 0) return;
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    if (previous_ >= 0) cudaSetDevice(previous_);
  }

 private:
  int previous_ = -1;
};

enum class Kind { Float, MinMax, Sign };

Kind kind_of(const Codec& c) {
  if (dynamic_cast<const FloatCodec*>(&c)) return Kind::Float;
  if (dynamic_cast<const MinMaxUint8Codec*>(&c)) return Kind::MinMax;
  if (dynamic_cast<const Sign1BitCodec*>(&c)) return Kind::Sign;
  throw InvalidArgument("CUDA codecs: no kernels for codec '" + c.name() + "'");
}

template <class Rule>
void decode_blocks(const BlockCodec& c, const std::uint8_t* wire, std::size_t count, float* out, bool accumulate,
                   cudaStream_t s, Rule rule, bool minmax) {
  const Layout l = layout_of(c, count);
  const std::size_t params_bytes = align_up(l.blocks * sizeof(BlockParams));
  StreamScratch scratch(params_bytes + sizeof(FaultWord), s);
  auto* params = scratch.at<BlockParams>(0);
  auto* first = scratch.at<FaultWord>(params_bytes);
  check(cudaMemsetAsync(first, 0xff, sizeof(FaultWord), s), "cudaMemsetAsync");
  check_blocks<<<grid_for(l.blocks), kThreads, 0, s>>>(wire, l, rule, params, first);
  if (minmax) {
    dequantize<<<grid_for(count), kThreads, 0, s>>>(wire, l, params, out, accumulate, first);
  } else {
    sign_unpack<<<grid_for(count), kThreads, 0, s>>>(wire, l, params, out, accumulate, first);
  }
  check(cudaGetLastError(), "kernel launch");
  FaultWord word = kNoFault;
  check(cudaMemcpyAsync(&word, first, sizeof word, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  if (word != kNoFault) raise_fault(c, word, l);
}

}  // namespace

bool built() { return true; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: not an error to keep
    return 0;
  }
  return n;
}

void encode(const Codec& codec, const void* in, std::size_t count, DType dtype, std::uint8_t* wire,
            std::uintptr_t stream, int device) {
  check_input(dtype);
  if (count == 0) return;
  const DeviceGuard on(device);
  check_aligned(in, dtype_size(dtype), "the input");
  const cudaStream_t s = as_stream(stream);
  switch (kind_of(codec)) {
    case Kind::Float: {
      const DType w = static_cast<const FloatCodec&>(codec).wire_dtype();
      if (w == dtype) {
        check(cudaMemcpyAsync(wire, in, count * dtype_size(w), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
      } else {
        float_encode<<<grid_for(count), kThreads, 0, s>>>(in, dtype, count, w, wire);
      }
      break;
    }
    case Kind::MinMax: {
      const Layout l = layout_of(static_cast<const BlockCodec&>(codec), count);
      const std::size_t tiles_per_block = (l.block + kTile - 1) / kTile;
      const std::size_t num_tiles = (l.blocks - 1) * tiles_per_block + (l.values_in(l.blocks - 1) + kTile - 1) / kTile;
      const std::size_t tiles_bytes = align_up(num_tiles * sizeof(TileRange));
      StreamScratch scratch(tiles_bytes + l.blocks * sizeof(BlockParams), s);
      auto* tiles = scratch.at<TileRange>(0);
      auto* params = scratch.at<BlockParams>(tiles_bytes);
      tile_ranges<<<grid_for(num_tiles, 1), kThreads, 0, s>>>(in, dtype, l, tiles_per_block, tiles, num_tiles);
      minmax_headers<<<grid_for(l.blocks), kThreads, 0, s>>>(l, tiles_per_block, tiles, wire, params);
      quantize<<<grid_for(count), kThreads, 0, s>>>(in, dtype, l, params, wire);
      break;
    }
    case Kind::Sign: {
      const Layout l = layout_of(static_cast<const BlockCodec&>(codec), count);
      sign_headers<<<grid_for(l.blocks, 1), 32, 0, s>>>(in, dtype, l, wire);
      sign_bits<<<grid_for((count + 7) / 8), kThreads, 0, s>>>(in, dtype, l, wire);
      break;
    }
  }
  check(cudaGetLastError(), "kernel launch");
}

void decode(const Codec& codec, const std::uint8_t* wire, std::size_t wire_size, std::size_t count, float* out,
            bool accumulate, std::uintptr_t stream, int device) {
  codec.check_wire_size(wire_size, count);
  if (count == 0) return;
  const DeviceGuard on(device);
  check_aligned(out, sizeof(float), "the output");
  const cudaStream_t s = as_stream(stream);
  switch (kind_of(codec)) {
    case Kind::Float: {
      const DType w = static_cast<const FloatCodec&>(codec).wire_dtype();
      float_decode<<<grid_for(count), kThreads, 0, s>>>(wire, w, count, out, accumulate);
      check(cudaGetLastError(), "kernel launch");
      break;
    }
    case Kind::MinMax:
      decode_blocks(static_cast<const BlockCodec&>(codec), wire, count, out, accumulate, s, MinMaxRule{}, true);
      break;
    case Kind::Sign:
      decode_blocks(static_cast<const BlockCodec&>(codec), wire, count, out, accumulate, s, SignRule{}, false);
      break;
  }
}

void synchronize(std::uintptr_t stream) { check(cudaStreamSynchronize(as_stream(stream)), "cudaStreamSynchronize"); }

DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) { check(cudaMalloc(&ptr_, bytes ? bytes : 1), "cudaMalloc"); }

DeviceBuffer::~DeviceBuffer() { cudaFree(ptr_); }

void DeviceBuffer::upload(const void* host, std::size_t bytes) {
  if (bytes > bytes_) throw InvalidArgument("DeviceBuffer::upload: more bytes than the buffer holds");
  check(cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
}

void DeviceBuffer::download(void* host, std::size_t bytes) const {
  if (bytes > bytes_) throw InvalidArgument("DeviceBuffer::download: more bytes than the buffer holds");
  check(cudaMemcpy(host, ptr_, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
}

void DeviceBuffer::copy_from(const DeviceBuffer& other, std::size_t bytes, std::uintptr_t stream) {
  if (bytes > bytes_ || bytes > other.bytes_) throw InvalidArgument("DeviceBuffer::copy_from: too many bytes");
  check(cudaMemcpyAsync(ptr_, other.ptr_, bytes, cudaMemcpyDeviceToDevice, as_stream(stream)), "cudaMemcpyAsync");
}

}  // namespace bagua::cuda
