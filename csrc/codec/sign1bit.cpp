#include "codec/sign1bit.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "core/error.hpp"

namespace bagua {

void Sign1BitCodec::encode_block(const float* v, std::size_t n, BlockHeader& h, std::uint8_t* payload) const {
  const float sum = kernels::sum_abs(v, n, isa_);
  if (!std::isfinite(sum)) {
    h.flags = BlockHeader::kNonFinite;
    std::memset(payload, 0, payload_bytes(n));
    return;
  }
  h.a = sum / static_cast<float>(n);
  kernels::sign_pack(v, n, payload, isa_);
}

BlockFault Sign1BitCodec::block_fault(const BlockHeader& h, const std::uint8_t* payload, std::size_t n) const {
  return sign_fault(h, n, n % 8 ? payload[n / 8] : 0);
}

void Sign1BitCodec::decode_block(const BlockHeader& h, const std::uint8_t* payload, std::size_t n, float* out,
                                 bool accumulate) const {
  kernels::sign_unpack(payload, n, h.a, out, accumulate, isa_);
}

}  // namespace bagua
