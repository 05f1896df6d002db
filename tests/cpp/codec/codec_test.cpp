#include "codec/codec.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "codec/block_header.hpp"
#include "codec/error_feedback.hpp"
#include "codec/minmax_uint8.hpp"
#include "core/error.hpp"

namespace bagua {
namespace {

std::vector<float> random_values(std::size_t n, unsigned seed, float spread = 3.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.5f, spread);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

std::vector<std::uint8_t> encode(const Codec& c, const std::vector<float>& v) {
  std::vector<std::uint8_t> wire(c.wire_bytes(v.size()));
  c.encode(v.data(), v.size(), DType::F32, wire.data());
  return wire;
}

std::vector<float> decode(const Codec& c, const std::vector<std::uint8_t>& wire, std::size_t n) {
  std::vector<float> out(n, -7.0f);
  c.decode(wire.data(), wire.size(), n, out.data());
  return out;
}

const std::size_t kSizes[] = {0, 1, 2, 7, 16, 17, 1000, 4099};

}  // namespace

TEST(MinMaxUint8, RoundTripWithinHalfAStepPerBlock) {
  for (std::size_t block : {std::size_t{0}, std::size_t{256}}) {
    auto codec = make_codec("minmax_uint8", block);
    for (std::size_t n : kSizes) {
      const auto v = random_values(n, 1 + n);
      const auto out = decode(*codec, encode(*codec, v), n);
      const std::size_t b = block ? block : std::max<std::size_t>(n, 1);
      for (std::size_t start = 0; start < n; start += b) {
        const std::size_t end = std::min(n, start + b);
        const float lo = *std::min_element(v.begin() + start, v.begin() + end);
        const float hi = *std::max_element(v.begin() + start, v.begin() + end);
        const float ulps = 4 * std::numeric_limits<float>::epsilon() * std::max(std::fabs(lo), std::fabs(hi));
        for (std::size_t i = start; i < end; ++i) {
          ASSERT_LE(std::fabs(v[i] - out[i]), (hi - lo) / 510 + MinMaxUint8Codec::kEps + ulps)
              << "n=" << n << " block=" << block << " i=" << i;
        }
      }
    }
  }
}

// What the decoded values say of the rounding: step^2 / 12 per block, step
// from the block's decoded range; and that is what the rounding did (the
// mean squared error of many values against the prediction), which is all
// qadam's optimizer relies on.
TEST(MinMaxUint8, RoundingVarianceIsOneTwelfthOfTheSquaredStepPerBlock) {
  const std::size_t block = 4096, n = 3 * block + 1000;
  auto codec = make_codec("minmax_uint8", block);
  auto v = random_values(n, 5);
  for (std::size_t i = block; i < 2 * block; ++i) v[i] *= 1e-3f;  // a block of another scale
  const auto out = decode(*codec, encode(*codec, v), n);
  std::vector<float> variance(n, -1.0f);
  ASSERT_TRUE(codec->rounding_variance(out.data(), n, variance.data()));
  for (std::size_t start = 0; start < n; start += block) {
    const std::size_t end = std::min(n, start + block);
    const float lo = *std::min_element(v.begin() + start, v.begin() + end);
    const float hi = *std::max_element(v.begin() + start, v.begin() + end);
    const double step = (static_cast<double>(hi) - lo) / 255;
    double squared = 0;
    for (std::size_t i = start; i < end; ++i) {
      ASSERT_NEAR(variance[i], step * step / 12, 1e-4 * step * step) << "i=" << i;
      squared += (static_cast<double>(v[i]) - out[i]) * (static_cast<double>(v[i]) - out[i]);
    }
    const double measured = squared / static_cast<double>(end - start);
    EXPECT_GT(measured, 0.8 * step * step / 12) << "block at " << start;
    EXPECT_LT(measured, 1.2 * step * step / 12) << "block at " << start;
  }
  // A block the codec would send as non-finite says nothing.
  auto bad = out;
  bad[7] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(codec->rounding_variance(bad.data(), n, variance.data()));
  // Neither do a sign codec's values (+-scale: what each value lost is not in them) nor a float codec's.
  EXPECT_FALSE(make_codec("sign1bit", 256)->rounding_variance(out.data(), n, variance.data()));
  EXPECT_FALSE(make_codec("fp16")->rounding_variance(out.data(), n, variance.data()));
}

// knows_rounding_variance is what rounding_variance does on finite values,
// asked once: every codec by name, every block size.
TEST(Codec, KnowsRoundingVarianceExactlyWhenItAnswers) {
  const std::size_t n = 1000;
  const auto v = random_values(n, 9);
  for (const std::string& name : codec_names()) {
    for (std::size_t block : {std::size_t{0}, std::size_t{64}}) {
      auto codec = make_codec(name, block);
      const auto out = decode(*codec, encode(*codec, v), n);
      std::vector<float> variance(n);
      EXPECT_EQ(codec->knows_rounding_variance(), codec->rounding_variance(out.data(), n, variance.data()))
          << name << " block " << block;
      EXPECT_EQ(codec->knows_rounding_variance(), name == "minmax_uint8") << name;
    }
  }
}

TEST(MinMaxUint8, ConstantBlocksAreExactAndHalfInputsWork) {
  auto codec = make_codec("minmax_uint8", 64);
  std::vector<float> v(200, -3.25f);
  EXPECT_EQ(decode(*codec, encode(*codec, v), v.size()), v);
  // fp16 and bf16 inputs encode like their fp32 values.
  const auto f = random_values(100, 9);
  std::vector<std::uint16_t> h(100), b(100);
  std::vector<float> hf(100), bf(100);
  for (int i = 0; i < 100; ++i) {
    h[i] = float_to_half(f[i]);
    hf[i] = half_to_float(h[i]);
    b[i] = float_to_bf16(f[i]);
    bf[i] = bf16_to_float(b[i]);
  }
  std::vector<std::uint8_t> wire(codec->wire_bytes(100));
  codec->encode(h.data(), 100, DType::F16, wire.data());
  EXPECT_EQ(wire, encode(*codec, hf));
  codec->encode(b.data(), 100, DType::BF16, wire.data());
  EXPECT_EQ(wire, encode(*codec, bf));
  EXPECT_THROW(codec->encode(h.data(), 100, DType::I32, wire.data()), InvalidArgument);
}

TEST(MinMaxUint8, NonFiniteBlocksDecodeToNaNAndSpareTheOthers) {
  auto codec = make_codec("minmax_uint8", 4);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> v{1, 2, 3, 4, 5, bad, 7, 8, 9, 10};
    const auto out = decode(*codec, encode(*codec, v), v.size());
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(out[i], v[i], 3.0 / 510 + 1e-6);
    for (int i = 4; i < 8; ++i) EXPECT_TRUE(std::isnan(out[i]));
    for (int i = 8; i < 10; ++i) EXPECT_NEAR(out[i], v[i], 1.0 / 510 + 1e-6);
  }
  // A range beyond fp32 (finite ends) is treated the same way.
  std::vector<float> huge{-3e38f, 3e38f};
  const auto out = decode(*codec, encode(*codec, huge), 2);
  EXPECT_TRUE(std::isnan(out[0]) && std::isnan(out[1]));
}

TEST(Sign1Bit, DecodesToSignTimesMeanMagnitude) {
  auto codec = make_codec("sign1bit", 5);
  std::vector<float> v{1, -2, 3, -4, 0, 10, -10};
  const auto out = decode(*codec, encode(*codec, v), v.size());
  const std::vector<float> expect{2, -2, 2, -2, 2, 10, -10};
  EXPECT_EQ(out, expect);
  EXPECT_EQ(codec->wire_bytes(7), 2 * BlockHeader::kBytes + 1 + 1);
}

TEST(Sign1Bit, ErrorFeedbackTelescopes) {
  for (std::size_t n : {std::size_t{1}, std::size_t{13}, std::size_t{1000}}) {
    auto codec = make_codec("sign1bit", 64);
    ErrorFeedback ef(n);
    std::vector<double> sent(n, 0), inputs(n, 0);
    std::vector<std::uint8_t> wire(codec->wire_bytes(n));
    std::vector<float> decoded(n);
    for (int step = 0; step < 30; ++step) {
      const auto g = random_values(n, 100 + step);
      ef.encode(*codec, g.data(), wire.data());
      codec->decode(wire.data(), wire.size(), n, decoded.data());
      for (std::size_t i = 0; i < n; ++i) {
        sent[i] += decoded[i];
        inputs[i] += g[i];
      }
    }
    for (std::size_t i = 0; i < n; ++i) EXPECT_NEAR(sent[i] + ef.residual()[i], inputs[i], 1e-3) << i;
  }
}

// BlockCodec's error feedback works block by block; it must give the bytes
// and residual values of the plain steps (add, encode, subtract what decodes),
// written out here over the whole input. Residuals of several steps, blocks
// that are constant, partial or non-finite, and signed zeros are covered.
TEST(ErrorFeedback, BlockByBlockEqualsTheWholeInputSteps) {
  for (const std::string name : {"minmax_uint8", "sign1bit"}) {
    for (std::size_t block : {std::size_t{0}, std::size_t{64}, std::size_t{4096}}) {
      for (std::size_t n : {std::size_t{1}, std::size_t{63}, std::size_t{64}, std::size_t{1000}, std::size_t{9001}}) {
        const auto codec = make_codec(name, block);
        std::vector<float> fused(n, 0.0f), plain(n, 0.0f);
        std::vector<std::uint8_t> wire_fused(codec->wire_bytes(n)), wire_plain(codec->wire_bytes(n));
        for (int step = 0; step < 4; ++step) {
          auto x = random_values(n, 31 * n + step);
          if (n > 100) {
            std::fill(x.begin() + 64, x.begin() + 128, 0.25f);  // a constant block at block size 64
            x[5] = -0.0f;
            if (step == 2) x[n - 3] = std::numeric_limits<float>::infinity();  // its block turns non-finite
          }
          encode_with_feedback(*codec, x.data(), n, fused.data(), wire_fused.data());
          for (std::size_t i = 0; i < n; ++i) plain[i] += x[i];
          codec->encode(plain.data(), n, DType::F32, wire_plain.data());
          const auto decoded = decode(*codec, wire_plain, n);
          for (std::size_t i = 0; i < n; ++i) plain[i] = std::isnan(decoded[i]) ? decoded[i] : plain[i] - decoded[i];
          ASSERT_EQ(wire_fused, wire_plain) << name << " block " << block << " n " << n << " step " << step;
          // Equal values: every bit but a zero's sign (the codecs read -0 as
          // +0) and a NaN's payload (a non-finite block's residual is NaN).
          for (std::size_t i = 0; i < n; ++i) {
            if (std::isnan(plain[i])) {
              ASSERT_TRUE(std::isnan(fused[i])) << i;
            } else {
              ASSERT_EQ(fused[i], plain[i]) << name << " block " << block << " n " << n << " step " << step << " i " << i;
            }
          }
        }
      }
    }
  }
}

// The vectorized loops must write exactly the reference loops' bytes.
TEST(Codecs, EveryCpuVariantWritesTheSameBytes) {
  const auto isas = kernels::available_isas();
  ASSERT_GE(isas.size(), 2u);  // at least scalar and baseline on g++
  for (const std::string name : {"minmax_uint8", "sign1bit", "fp16"}) {
    for (std::size_t n : {std::size_t{1}, std::size_t{15}, std::size_t{16}, std::size_t{33}, std::size_t{4099},
                          std::size_t{100000}}) {
      auto v = random_values(n, 7 * n);
      if (n > 10) v[3] = -0.0f;  // signed zero: must not depend on evaluation order
      const auto reference = encode(*make_codec(name, 1000, isas.front()), v);
      for (auto isa : isas) {
        const auto codec = make_codec(name, 1000, isa);
        EXPECT_EQ(encode(*codec, v), reference) << name << " n=" << n << " " << kernels::isa_name(isa);
        EXPECT_EQ(decode(*codec, reference, n), decode(*make_codec(name, 1000, isas.front()), reference, n));
      }
    }
  }
}

// fp16 narrowing (F16C on AVX2 machines) against float_to_half, on the
// values where rounding is decided: every half, the midpoints between
// neighbours and the floats just beside them, the overflow threshold,
// subnormals, signed zeros, Inf, and NaNs with payloads.
TEST(Codecs, EveryCpuVariantNarrowsToFp16Alike) {
  std::vector<float> v;
  for (std::uint32_t h = 0; h < 0x7bff; ++h) {  // 0x7bff's upper neighbour is Inf: 65520 is listed below
    for (std::uint32_t sign : {0u, 0x8000u}) {
      const float lo = half_to_float(static_cast<std::uint16_t>(h | sign));
      const float hi = half_to_float(static_cast<std::uint16_t>((h + 1) | sign));
      const float mid = lo + (hi - lo) * 0.5f;  // exact: fp16 values leave fp32 13 spare bits
      for (float x : {lo, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, hi * 2)}) v.push_back(x);
    }
  }
  for (float x : {65504.0f, 65519.99f, 65520.0f, 1e30f, 1e-40f, -1e-45f, std::numeric_limits<float>::infinity()}) {
    v.push_back(x);
    v.push_back(-x);
  }
  for (std::uint32_t nan : {0x7fc00000u, 0x7f800001u, 0xffc12345u, 0x7fbfffffu}) v.push_back(bits_float(nan));
  std::vector<std::uint8_t> want(2 * v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::uint16_t h = float_to_half(v[i]);
    std::memcpy(want.data() + 2 * i, &h, 2);
  }
  for (auto isa : kernels::available_isas()) {
    std::vector<std::uint8_t> got(2 * v.size());
    kernels::narrow_f16(v.data(), v.size(), got.data(), isa);
    const auto m = std::mismatch(got.begin(), got.end(), want.begin());
    EXPECT_TRUE(m.first == got.end()) << kernels::isa_name(isa) << ": value " << (m.first - got.begin()) / 2 << " = "
                                      << v[(m.first - got.begin()) / 2];
  }
}

TEST(Codecs, FloatCodecsRoundLikeTheCasts) {
  const auto v = random_values(777, 3, 1000.0f);
  const auto id = decode(*make_codec("identity"), encode(*make_codec("identity"), v), v.size());
  EXPECT_EQ(id, v);
  const auto h = decode(*make_codec("fp16"), encode(*make_codec("fp16"), v), v.size());
  const auto b = decode(*make_codec("bf16"), encode(*make_codec("bf16"), v), v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(h[i], half_to_float(float_to_half(v[i])));
    EXPECT_EQ(b[i], bf16_to_float(float_to_bf16(v[i])));
  }
  EXPECT_EQ(make_codec("fp16")->wire_bytes(10), 20u);
  std::vector<float> acc(v.size(), 1.0f);
  auto wire = encode(*make_codec("identity"), v);
  make_codec("identity")->decode(wire.data(), wire.size(), v.size(), acc.data(), true);
  EXPECT_EQ(acc[5], v[5] + 1.0f);
}

TEST(Codecs, DecodersRejectMalformedBytesWithoutWriting) {
  auto mm = make_codec("minmax_uint8", 8);
  auto sg = make_codec("sign1bit", 8);
  const auto v = random_values(20, 5);
  auto expect_rejected = [](const Codec& c, std::vector<std::uint8_t> wire, std::size_t n) {
    std::vector<float> out(n, 42.0f);
    EXPECT_THROW(c.decode(wire.data(), wire.size(), n, out.data()), ProtocolError) << c.name();
    for (float x : out) ASSERT_EQ(x, 42.0f);
  };
  auto patch = [](std::vector<std::uint8_t> w, std::size_t at, auto value) {
    std::memcpy(w.data() + at, &value, sizeof value);
    return w;
  };
  for (const auto* c : {mm.get(), sg.get()}) {
    const auto good = encode(*c, v);
    auto shorter = good;
    shorter.pop_back();
    expect_rejected(*c, shorter, 20);                                    // size
    expect_rejected(*c, good, 21);                                       // count
    expect_rejected(*c, patch(good, 8, std::uint32_t{9}), 20);           // block count
    expect_rejected(*c, patch(good, 12, std::uint32_t{2}), 20);          // unknown flag
    const std::size_t last = good.size() - (c == mm.get() ? 4 + 16 : 1 + 16);
    expect_rejected(*c, patch(good, last, std::numeric_limits<float>::quiet_NaN()), 20);  // lo / scale
  }
  const auto good = encode(*mm, v);
  expect_rejected(*mm, patch(good, 0, 1e30f), 20);  // lo > hi
  expect_rejected(*mm, patch(good, 4, std::numeric_limits<float>::infinity()), 20);
  const auto sgood = encode(*sg, v);
  expect_rejected(*sg, patch(sgood, 4, 1.0f), 20);  // second field must be 0
  expect_rejected(*sg, patch(sgood, 0, -1.0f), 20);  // negative scale
  auto padded = sgood;
  padded.back() |= 0x80;  // 20 = 8 + 8 + 4: the last byte has 4 padding bits
  expect_rejected(*sg, padded, 20);
  EXPECT_THROW(make_codec("zip"), InvalidArgument);
  try {
    make_codec("zip");
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("minmax_uint8"), std::string::npos);
  }
}

}  // namespace bagua
