// The inner loops of the codecs on fp32 data, in interchangeable variants:
// `Scalar` (vectorization disabled: the reference), `Baseline` (vectorized by
// the compiler for the build's default ISA) and `Avx2` (x86 with AVX2, chosen
// at run time). Every variant computes exactly the same values: per-element
// work is the same IEEE operations (no FMA contraction), and reductions use
// one fixed order (kLanes interleaved partial sums), so the wire bytes do not
// depend on the machine that encoded them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace bagua::kernels {

enum class Isa { Scalar, Baseline, Avx2 };

// The variant codecs use by default: the fastest this CPU runs, or the one
// named by BAGUA_CODEC_ISA (scalar, baseline, avx2; an invalid name is an
// InvalidArgument listing the valid ones). And all of them (for tests).
Isa best_isa();
std::vector<Isa> available_isas();
const char* isa_name(Isa isa);

// Partial sums are kept in this many interleaved lanes, then added pairwise.
constexpr std::size_t kLanes = 16;

struct Range {
  float lo = 0, hi = 0;
  bool finite = true;  // false: some value was NaN or +-Inf (lo/hi then meaningless)
};

// min and max of v[0, n); -0 is reported as +0.
Range min_max(const float* v, std::size_t n, Isa isa);
// q[i] = min((v[i] - lo) * scale + 0.5, 255) truncated: round half up of the
// position in [lo, hi], for v[i] in [lo, hi].
void quantize_u8(const float* v, std::size_t n, float lo, float scale, std::uint8_t* q, Isa isa);
// out[i] = lo + q[i] * step (assign) or out[i] += lo + q[i] * step (accumulate).
void dequantize_u8(const std::uint8_t* q, std::size_t n, float lo, float step, float* out, bool accumulate,
                   Isa isa);
// Sum of |v[i]|, in the fixed lane order.
float sum_abs(const float* v, std::size_t n, Isa isa);
// Bit i of bits (LSB first within each byte) = v[i] >= 0 (or NaN: never, callers reject it).
void sign_pack(const float* v, std::size_t n, std::uint8_t* bits, Isa isa);
// out[i] = bit ? scale : -scale (assign or accumulate).
void sign_unpack(const std::uint8_t* bits, std::size_t n, float scale, float* out, bool accumulate, Isa isa);
// The fp16 bits of v[i] (core/float16.hpp's float_to_half, NaN made the same
// quiet NaN), stored little-endian at out + 2 i; Avx2 uses the F16C unit.
void narrow_f16(const float* v, std::size_t n, std::uint8_t* out, Isa isa);

}  // namespace bagua::kernels
