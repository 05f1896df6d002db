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

void Sign1BitCodec::check_block(const BlockHeader& h, const std::uint8_t* payload, std::size_t n) const {
  if (h.b != 0) throw ProtocolError("sign1bit: the second header field must be 0");
  if (h.flags & BlockHeader::kNonFinite) {
    if (h.a != 0) throw ProtocolError("sign1bit: a non-finite block must carry scale 0");
    return;
  }
  if (!std::isfinite(h.a) || h.a < 0) throw ProtocolError(fmt::format("sign1bit: bad block scale {}", h.a));
  if (n % 8 && (payload[n / 8] >> (n % 8)) != 0) throw ProtocolError("sign1bit: padding bits are not zero");
}

void Sign1BitCodec::decode_block(const BlockHeader& h, const std::uint8_t* payload, std::size_t n, float* out,
                                 bool accumulate) const {
  kernels::sign_unpack(payload, n, h.a, out, accumulate, isa_);
}

}  // namespace bagua
