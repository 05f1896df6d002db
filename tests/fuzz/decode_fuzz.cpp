// libFuzzer target: one decoder (BAGUA_FUZZ_CODEC) on arbitrary bytes. The
// first 4 bytes pick the value count, the 5th the block size, the rest is
// the wire. A malformed wire must be a ProtocolError; anything else the
// sanitizers see (out-of-bounds access, UB) or any other exception is a bug.
#include <cstdint>
#include <cstring>
#include <vector>

#include "codec/codec.hpp"
#include "core/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 5) return 0;
  std::uint32_t count;
  std::memcpy(&count, data, 4);
  count %= 1u << 16;
  const std::size_t block = data[4] % 4 == 0 ? 0 : std::size_t{1} << (data[4] % 13);
  static const auto codecs = [] {
    std::vector<bagua::CodecPtr> out;
    for (std::size_t b : {std::size_t{0}, std::size_t{2}, std::size_t{4}, std::size_t{8}, std::size_t{16},
                          std::size_t{32}, std::size_t{64}, std::size_t{128}, std::size_t{256}, std::size_t{512},
                          std::size_t{1024}, std::size_t{2048}, std::size_t{4096}}) {
      out.push_back(bagua::make_codec(BAGUA_FUZZ_CODEC, b));
    }
    return out;
  }();
  const auto& codec = *codecs[block == 0 ? 0 : data[4] % 13];
  // An exact-size copy, so reading one byte past the wire is caught.
  std::vector<std::uint8_t> wire(data + 5, data + size);
  std::vector<float> out(count, 1.0f);
  try {
    codec.decode(wire.data(), wire.size(), count, out.data(), data[4] & 0x80);
  } catch (const bagua::ProtocolError&) {
    return 0;
  }
  // Accepted bytes must re-encode without trouble, to the same size.
  std::vector<std::uint8_t> again(codec.wire_bytes(count));
  codec.encode(out.data(), count, bagua::DType::F32, again.data());
  if (again.size() != wire.size()) __builtin_trap();
  return 0;
}
