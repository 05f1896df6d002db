// Reduction operators and the elementwise kernel every collective uses:
// dst[i] = dst[i] (op) src[i]. 16-bit floats are widened to fp32 for the
// arithmetic and rounded back once per call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/dtype.hpp"

namespace bagua {

enum class ReduceOp : std::uint8_t { Sum, Avg, Min, Max, Product };

std::string_view reduce_op_name(ReduceOp op);

// dst = dst (op) src, elementwise over `count` elements of type `t`.
// Avg accumulates like Sum; callers divide once at the end with finish_average.
void reduce_into(void* dst, const void* src, std::size_t count, DType t, ReduceOp op);

// data /= divisor (for Avg). Integer types use truncating division, matching
// torch's integer `div(rounding_mode="trunc")`.
void finish_average(void* data, std::size_t count, DType t, int divisor);

}  // namespace bagua
