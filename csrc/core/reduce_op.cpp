#include "core/reduce_op.hpp"

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/error.hpp"

namespace bagua {
namespace {

// Plain loops over restrict-qualified pointers: g++ -O3 vectorizes these for
// the native element types; the fp16/bf16 paths are scalar conversions.
template <typename T, typename F>
void combine(T* __restrict dst, const T* __restrict src, std::size_t n, F f) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = f(dst[i], src[i]);
}

template <typename T>
void reduce_native(void* d, const void* s, std::size_t n, ReduceOp op) {
  T* dst = static_cast<T*>(d);
  const T* src = static_cast<const T*>(s);
  switch (op) {
    case ReduceOp::Sum:
    case ReduceOp::Avg: combine(dst, src, n, [](T a, T b) { return static_cast<T>(a + b); }); return;
    case ReduceOp::Product: combine(dst, src, n, [](T a, T b) { return static_cast<T>(a * b); }); return;
    // NaN propagates, as in torch.minimum / torch.maximum.
    case ReduceOp::Min: combine(dst, src, n, [](T a, T b) { return (a != a || a < b) ? a : b; }); return;
    case ReduceOp::Max: combine(dst, src, n, [](T a, T b) { return (a != a || a > b) ? a : b; }); return;
  }
}

template <float (*ToF)(std::uint16_t), std::uint16_t (*FromF)(float)>
void reduce_16bit(void* d, const void* s, std::size_t n, ReduceOp op) {
  auto* dst = static_cast<std::uint16_t*>(d);
  const auto* src = static_cast<const std::uint16_t*>(s);
  for (std::size_t i = 0; i < n; ++i) {
    const float a = ToF(dst[i]);
    const float b = ToF(src[i]);
    float r = 0.f;
    switch (op) {
      case ReduceOp::Sum:
      case ReduceOp::Avg: r = a + b; break;
      case ReduceOp::Product: r = a * b; break;
      case ReduceOp::Min: r = (a != a || a < b) ? a : b; break;
      case ReduceOp::Max: r = (a != a || a > b) ? a : b; break;
    }
    dst[i] = FromF(r);
  }
}

template <typename T>
void divide_native(void* d, std::size_t n, int divisor) {
  T* p = static_cast<T*>(d);
  if constexpr (std::is_floating_point_v<T>) {
    // Divide rather than multiply by a reciprocal: the reciprocal differs in
    // the last bit for some divisors, and results must match torch's `/ n`.
    for (std::size_t i = 0; i < n; ++i) p[i] = p[i] / static_cast<T>(divisor);
  } else {
    for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<T>(p[i] / divisor);
  }
}

}  // namespace

std::string_view reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Avg: return "avg";
    case ReduceOp::Min: return "min";
    case ReduceOp::Max: return "max";
    case ReduceOp::Product: return "product";
  }
  return "unknown";
}

void reduce_into(void* dst, const void* src, std::size_t count, DType t, ReduceOp op) {
  switch (t) {
    case DType::F32: return reduce_native<float>(dst, src, count, op);
    case DType::F64: return reduce_native<double>(dst, src, count, op);
    case DType::I8: return reduce_native<std::int8_t>(dst, src, count, op);
    case DType::U8: return reduce_native<std::uint8_t>(dst, src, count, op);
    case DType::I32: return reduce_native<std::int32_t>(dst, src, count, op);
    case DType::I64: return reduce_native<std::int64_t>(dst, src, count, op);
    case DType::F16: return reduce_16bit<half_to_float, float_to_half>(dst, src, count, op);
    case DType::BF16: return reduce_16bit<bf16_to_float, float_to_bf16>(dst, src, count, op);
  }
  throw InvalidArgument("reduce_into: unknown dtype");
}

void finish_average(void* data, std::size_t count, DType t, int divisor) {
  if (divisor <= 0) throw InvalidArgument("finish_average: divisor must be positive");
  switch (t) {
    case DType::F32: return divide_native<float>(data, count, divisor);
    case DType::F64: return divide_native<double>(data, count, divisor);
    case DType::I8: return divide_native<std::int8_t>(data, count, divisor);
    case DType::U8: return divide_native<std::uint8_t>(data, count, divisor);
    case DType::I32: return divide_native<std::int32_t>(data, count, divisor);
    case DType::I64: return divide_native<std::int64_t>(data, count, divisor);
    case DType::F16: {
      auto* p = static_cast<std::uint16_t*>(data);
      for (std::size_t i = 0; i < count; ++i) p[i] = float_to_half(half_to_float(p[i]) / divisor);
      return;
    }
    case DType::BF16: {
      auto* p = static_cast<std::uint16_t*>(data);
      for (std::size_t i = 0; i < count; ++i) p[i] = float_to_bf16(bf16_to_float(p[i]) / divisor);
      return;
    }
  }
  throw InvalidArgument("finish_average: unknown dtype");
}

}  // namespace bagua
