// Element types the torch-free core understands (conversions of the 16-bit
// float formats: core/float16.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "core/float16.hpp"

namespace bagua {

enum class DType : std::uint8_t { F32, F64, F16, BF16, I8, U8, I32, I64 };

std::size_t dtype_size(DType t);
std::string_view dtype_name(DType t);

}  // namespace bagua
