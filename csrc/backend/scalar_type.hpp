// Mapping between torch's scalar types and the core's DType.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "core/dtype.hpp"

namespace bagua {

// nullopt for types the core does not reduce (bool, complex, fp8...): callers
// hand those to the inner backend.
inline std::optional<DType> to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::F32;
    case at::kDouble: return DType::F64;
    case at::kHalf: return DType::F16;
    case at::kBFloat16: return DType::BF16;
    case at::kChar: return DType::I8;
    case at::kByte: return DType::U8;
    case at::kInt: return DType::I32;
    case at::kLong: return DType::I64;
    default: return std::nullopt;
  }
}

inline at::ScalarType to_scalar_type(DType t) {
  switch (t) {
    case DType::F32: return at::kFloat;
    case DType::F64: return at::kDouble;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
    case DType::I8: return at::kChar;
    case DType::U8: return at::kByte;
    case DType::I32: return at::kInt;
    case DType::I64: return at::kLong;
  }
  return at::kByte;
}

}  // namespace bagua
