// The plain float codecs: identity (fp32 on the wire, lossless), fp16 and
// bf16 (round to nearest even; values beyond fp16's range become +-Inf, as
// a cast would). No header: the wire size alone is checked. NaN and Inf
// travel as they are.
#pragma once

#include "codec/codec.hpp"

namespace bagua {

class FloatCodec final : public Codec {
 public:
  // `wire` is F32, F16 or BF16; `isa`: the CPU loop variant of fp16 narrowing.
  explicit FloatCodec(DType wire, kernels::Isa isa = kernels::best_isa());

  std::string name() const override;
  std::size_t wire_bytes(std::size_t count) const override { return count * dtype_size(wire_); }
  void encode(const void* in, std::size_t count, DType dtype, std::uint8_t* wire) const override;
  void decode(const std::uint8_t* wire, std::size_t wire_size, std::size_t count, float* out,
              bool accumulate) const override;
  bool lossless() const override { return wire_ == DType::F32; }
  DType wire_dtype() const { return wire_; }

 private:
  DType wire_;
  kernels::Isa isa_;
};

}  // namespace bagua
