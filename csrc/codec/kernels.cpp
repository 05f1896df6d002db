#include "codec/kernels.hpp"

#include "codec/element_math.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "core/error.hpp"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace bagua::kernels {

#if defined(__GNUC__) && !defined(__clang__)
#define BAGUA_FINITE_ATTR __attribute__((optimize("finite-math-only", "no-signed-zeros")))
#else
#define BAGUA_FINITE_ATTR
#endif

// The reference: the same loops with the vectorizer off.
#if defined(__GNUC__) && !defined(__clang__)
#define BAGUA_KERNEL_NS scalar_impl
#define BAGUA_KERNEL_ATTR __attribute__((optimize("no-tree-vectorize", "no-tree-slp-vectorize")))
#include "codec/kernels_body.inc"
#undef BAGUA_KERNEL_NS
#undef BAGUA_KERNEL_ATTR
#define BAGUA_HAVE_SCALAR 1
#endif

#define BAGUA_KERNEL_NS baseline_impl
#define BAGUA_KERNEL_ATTR
#include "codec/kernels_body.inc"
#undef BAGUA_KERNEL_NS
#undef BAGUA_KERNEL_ATTR

#if defined(__x86_64__) && defined(__GNUC__)
// AVX2 without FMA: an FMA would round once where the others round twice.
// Every AVX2 CPU also has F16C (best_isa checks), which narrows fp32 to fp16
// with IEEE round-to-nearest-even: float_to_half's bits, except that a NaN
// keeps its payload there, so vectors holding a NaN take the portable loop.
#define BAGUA_KERNEL_NS avx2_impl
#define BAGUA_KERNEL_ATTR __attribute__((target("avx2,f16c")))
#define BAGUA_KERNEL_HAS_NARROW_F16 1
#include "codec/kernels_body.inc"
namespace avx2_impl {
BAGUA_KERNEL_ATTR void narrow_f16(const float* v, std::size_t n, std::uint8_t* out) {
  const __m256i magnitude = _mm256_set1_epi32(0x7fffffff);
  const __m256i infinity = _mm256_set1_epi32(0x7f800000);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(v + i);
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(_mm256_castps_si256(x), magnitude), infinity);
    if (!_mm256_testz_si256(nan, nan)) {
      for (std::size_t j = i; j < i + 8; ++j) {
        const std::uint16_t h = float_to_half(v[j]);
        std::memcpy(out + 2 * j, &h, 2);
      }
      continue;
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) {
    const std::uint16_t h = float_to_half(v[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}
}  // namespace avx2_impl
#undef BAGUA_KERNEL_HAS_NARROW_F16
#undef BAGUA_KERNEL_NS
#undef BAGUA_KERNEL_ATTR
#define BAGUA_HAVE_AVX2 1
#endif

#ifdef BAGUA_HAVE_AVX2
namespace {
// From CPUID itself: clang's __builtin_cpu_supports does not know "f16c".
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
}  // namespace
#endif

namespace {

bool cpu_runs_avx2() {
#ifdef BAGUA_HAVE_AVX2
  static const bool avx2 = __builtin_cpu_supports("avx2") && cpu_has_f16c();
  return avx2;
#else
  return false;
#endif
}

// BAGUA_CODEC_ISA=scalar|baseline|avx2 forces a variant (every variant
// writes the same bytes; the switch is for running a whole suite or
// benchmark on each); unset or empty, the fastest this CPU runs.
Isa choose_isa() {
  const Isa detected = cpu_runs_avx2() ? Isa::Avx2 : Isa::Baseline;
  const char* asked = std::getenv("BAGUA_CODEC_ISA");
  if (!asked || !*asked) return detected;
  for (Isa isa : available_isas()) {
    if (std::strcmp(asked, isa_name(isa)) == 0) return isa;
  }
  std::string valid;
  for (Isa isa : available_isas()) valid += std::string(valid.empty() ? "" : ", ") + isa_name(isa);
  throw InvalidArgument(fmt::format("BAGUA_CODEC_ISA={}: not a codec variant this build runs on this CPU (valid: {})",
                                    asked, valid));
}

}  // namespace

Isa best_isa() {
  static const Isa chosen = choose_isa();
  return chosen;
}

std::vector<Isa> available_isas() {
  std::vector<Isa> out;
#ifdef BAGUA_HAVE_SCALAR
  out.push_back(Isa::Scalar);
#endif
  out.push_back(Isa::Baseline);
  if (cpu_runs_avx2()) out.push_back(Isa::Avx2);
  return out;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Baseline: return "baseline";
    case Isa::Avx2: return "avx2";
  }
  return "?";
}

// One dispatcher per kernel: the variant asked for, the baseline when it is
// not built on this platform.
#ifdef BAGUA_HAVE_SCALAR
#define BAGUA_CASE_SCALAR(call) \
  case Isa::Scalar: return scalar_impl::call;
#else
#define BAGUA_CASE_SCALAR(call)
#endif
#ifdef BAGUA_HAVE_AVX2
#define BAGUA_CASE_AVX2(call) \
  case Isa::Avx2: return avx2_impl::call;
#else
#define BAGUA_CASE_AVX2(call)
#endif
#define BAGUA_DISPATCH(call) \
  switch (isa) {             \
    BAGUA_CASE_SCALAR(call)  \
    BAGUA_CASE_AVX2(call)    \
    default: return baseline_impl::call; \
  }

namespace {
Range min_max_any(const float* v, std::size_t n, Isa isa) { BAGUA_DISPATCH(min_max(v, n)) }
}  // namespace

Range min_max(const float* v, std::size_t n, Isa isa) {
  Range r = min_max_any(v, n, isa);
  // -0 -> +0 (here, outside the finite-math loops): which signed zero a min
  // keeps depends on the order it met them in.
  r.lo += 0.0f;
  r.hi += 0.0f;
  return r;
}

void quantize_u8(const float* v, std::size_t n, float lo, float scale, std::uint8_t* q, Isa isa) {
  BAGUA_DISPATCH(quantize_u8(v, n, lo, scale, q))
}

void dequantize_u8(const std::uint8_t* q, std::size_t n, float lo, float step, float* out, bool accumulate,
                   Isa isa) {
  BAGUA_DISPATCH(dequantize_u8(q, n, lo, step, out, accumulate))
}

float sum_abs(const float* v, std::size_t n, Isa isa) { BAGUA_DISPATCH(sum_abs(v, n)) }

void sign_pack(const float* v, std::size_t n, std::uint8_t* bits, Isa isa) { BAGUA_DISPATCH(sign_pack(v, n, bits)) }

void sign_unpack(const std::uint8_t* bits, std::size_t n, float scale, float* out, bool accumulate, Isa isa) {
  BAGUA_DISPATCH(sign_unpack(bits, n, scale, out, accumulate))
}

void narrow_f16(const float* v, std::size_t n, std::uint8_t* out, Isa isa) { BAGUA_DISPATCH(narrow_f16(v, n, out)) }

}  // namespace bagua::kernels
