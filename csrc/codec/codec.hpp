// A codec turns fp32/fp16/bf16 values into wire bytes and back. Encoding is
// deterministic (the same input gives the same bytes on any machine, CPU
// loops and, when built, CUDA kernels alike); decoding treats the bytes as
// untrusted and checks every size and header field before touching memory.
//
// Codecs: identity (fp32 on the wire), fp16, bf16, minmax_uint8 (per block:
// a header with lo, hi and the count, then one byte per value) and sign1bit
// (per block: a header with the scale, then one bit per value). Error
// feedback for the lossy ones is ErrorFeedback's job (error_feedback.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "codec/kernels.hpp"
#include "core/dtype.hpp"

namespace bagua {

class Codec {
 public:
  virtual ~Codec() = default;
  virtual std::string name() const = 0;
  // Exact wire size of `count` values.
  virtual std::size_t wire_bytes(std::size_t count) const = 0;
  // `in` holds `count` values of `dtype` (F32, F16 or BF16); `wire` has
  // wire_bytes(count) bytes.
  virtual void encode(const void* in, std::size_t count, DType dtype, std::uint8_t* wire) const = 0;
  // Checks then decodes `count` fp32 values from `wire` (`wire_size` bytes)
  // into `out`, or adds them to it (`accumulate`). Malformed bytes throw
  // ProtocolError and leave `out` untouched. A NaN that comes from adding
  // (accumulate with a NaN on either side) has an unspecified payload: CPUs
  // and GPUs pick different ones; every other output bit is specified.
  virtual void decode(const std::uint8_t* wire, std::size_t wire_size, std::size_t count, float* out,
                      bool accumulate = false) const = 0;
  // Whether decode(encode(x)) == x for every fp32 x.
  virtual bool lossless() const = 0;
  // Error feedback's step (error_feedback.hpp): wire = C(x + residual) and
  // residual = (x + residual) - D(wire), on host memory. This version does
  // each step over the whole input; BlockCodec does all of them block by
  // block, the same bits with the values read from memory once.
  virtual void encode_with_feedback(const float* x, std::size_t n, float* residual, std::uint8_t* wire) const;
  // The variance of the error that this codec's rounding adds to each value,
  // as far as the `count` decoded values tell it, into `out`; false where
  // they do not tell it (a codec that does not know, a non-finite block),
  // and then `out` holds nothing to use. An optimizer that squares
  // what it receives (qadam's variance) subtracts it: the rounding is
  // otherwise learned as if it were signal.
  virtual bool rounding_variance(const float* decoded, std::size_t count, float* out) const;
  // Whether rounding_variance can answer for some finite values; false
  // means it never does. Lets a caller decide once, at construction.
  virtual bool knows_rounding_variance() const { return false; }

  // The first check of every decoder (CPU or CUDA): ProtocolError unless the
  // size is exact.
  void check_wire_size(std::size_t wire_size, std::size_t count) const;
};

using CodecPtr = std::shared_ptr<const Codec>;

// By name: "identity", "fp16", "bf16", "minmax_uint8", "sign1bit".
// `block_elems` (lossy codecs): values per header; 0 = one block per call.
// `isa`: the CPU loop variant (tests compare them; callers leave the default).
CodecPtr make_codec(const std::string& name, std::size_t block_elems = 0, kernels::Isa isa = kernels::best_isa());
const std::vector<std::string>& codec_names();

// Decoded fp32 values of `count` inputs of `dtype` (converted, for encoders
// of fp16/bf16 input): `scratch` is resized as needed, `in` returned as is
// for F32.
const float* as_float(const void* in, std::size_t count, DType dtype, std::vector<float>& scratch);

}  // namespace bagua
