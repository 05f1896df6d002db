// The CUDA codecs against the CPU ones: the same wire bytes from the same
// values, the same decoded values from the same bytes, the same refusals.
// Skipped (saying why) where the build has no CUDA codecs or no device is
// present; CI compiles the kernels whenever nvcc is installed.
#include "codec/cuda/cuda_codec.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <limits>
#include <random>

#include "codec/block_header.hpp"
#include "core/error.hpp"

namespace bagua {
namespace {

bool have_device() { return cuda::built() && cuda::device_count() > 0; }

#define REQUIRE_CUDA_DEVICE()                                                                          \
  if (!have_device()) {                                                                                \
    GTEST_SKIP() << (cuda::built() ? "no CUDA device here" : "this build has no CUDA codecs (no nvcc)"); \
  }

// fp32 values, or their fp16/bf16 bit patterns, with specials sprinkled in
// when asked.
std::vector<std::uint8_t> values(std::size_t n, DType dtype, unsigned seed, bool specials) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.25f, 2.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  if (specials && n > 3) {
    v[n / 3] = std::numeric_limits<float>::quiet_NaN();
    v[n / 2] = -0.0f;
    v[n - 1] = std::numeric_limits<float>::infinity();
  }
  std::vector<std::uint8_t> out(n * dtype_size(dtype));
  for (std::size_t i = 0; i < n; ++i) {
    if (dtype == DType::F32) {
      std::memcpy(out.data() + 4 * i, &v[i], 4);
    } else {
      const std::uint16_t h = dtype == DType::F16 ? float_to_half(v[i]) : float_to_bf16(v[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

std::vector<std::uint8_t> gpu_encode(const Codec& c, const std::vector<std::uint8_t>& in, std::size_t n, DType t) {
  cuda::DeviceBuffer din(in.size()), dwire(c.wire_bytes(n));
  din.upload(in.data(), in.size());
  cuda::encode(c, din.data(), n, t, static_cast<std::uint8_t*>(dwire.data()));
  cuda::synchronize();
  std::vector<std::uint8_t> wire(c.wire_bytes(n));
  dwire.download(wire.data(), wire.size());
  return wire;
}

std::vector<float> gpu_decode(const Codec& c, const std::vector<std::uint8_t>& wire, std::size_t n,
                              const std::vector<float>& initial, bool accumulate) {
  cuda::DeviceBuffer dwire(wire.size()), dout(n * sizeof(float));
  dwire.upload(wire.data(), wire.size());
  dout.upload(initial.data(), n * sizeof(float));
  cuda::decode(c, static_cast<const std::uint8_t*>(dwire.data()), wire.size(), n, static_cast<float*>(dout.data()),
               accumulate);
  std::vector<float> out(n);
  dout.download(out.data(), n * sizeof(float));
  return out;
}

// Bit for bit, except that with `any_nan` a NaN matches any NaN (a NaN made
// by an addition has an unspecified payload: codec.hpp). Describes the first
// difference, or returns "".
std::string first_difference(const std::vector<float>& got, const std::vector<float>& want, bool any_nan = false) {
  if (got.size() != want.size()) return "sizes differ";
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (any_nan && std::isnan(got[i]) && std::isnan(want[i])) continue;
    if (float_bits(got[i]) != float_bits(want[i])) {
      return "value " + std::to_string(i) + ": " + std::to_string(got[i]) + " vs " + std::to_string(want[i]);
    }
  }
  return "";
}

std::string first_difference(const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& want) {
  if (got.size() != want.size()) return "sizes differ";
  const auto m = std::mismatch(got.begin(), got.end(), want.begin());
  if (m.first == got.end()) return "";
  return "byte " + std::to_string(m.first - got.begin()) + ": " + std::to_string(*m.first) + " vs " +
         std::to_string(*m.second);
}

std::vector<std::uint8_t> as_bytes(const std::vector<float>& v) {
  std::vector<std::uint8_t> out(v.size() * 4);
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

const std::size_t kSizes[] = {1, 7, 17, 4096, 4099, 70001};
// 20000: codec blocks longer than the kernels' 8192-value tiles, several of them.
const std::size_t kBlocks[] = {0, 7, 4096, 20000};

}  // namespace

TEST(CudaCodec, WithoutADeviceEveryCallSaysWhy) {
  if (have_device()) GTEST_SKIP() << "a CUDA device is present";
  auto codec = make_codec("minmax_uint8", 4096);
  EXPECT_THROW(cuda::DeviceBuffer(64), Error);
  EXPECT_THROW(cuda::encode(*codec, nullptr, 16, DType::F32, nullptr), Error);
}

TEST(CudaCodec, EncodesTheCpuBytes) {
  REQUIRE_CUDA_DEVICE();
  for (const auto& name : codec_names()) {
    for (std::size_t block : kBlocks) {
      auto codec = make_codec(name, block);
      for (DType t : {DType::F32, DType::F16, DType::BF16}) {
        for (std::size_t n : kSizes) {
          for (bool specials : {false, true}) {
            const auto in = values(n, t, static_cast<unsigned>(n + block), specials);
            std::vector<std::uint8_t> cpu(codec->wire_bytes(n));
            codec->encode(in.data(), n, t, cpu.data());
            ASSERT_EQ(first_difference(gpu_encode(*codec, in, n, t), cpu), "")
                << name << " block=" << block << " dtype=" << dtype_name(t) << " n=" << n << " specials=" << specials;
          }
        }
      }
    }
  }
}

TEST(CudaCodec, EdgeValuesEncodeAlike) {
  REQUIRE_CUDA_DEVICE();
  const float big = 3.0e38f;
  const std::vector<std::vector<float>> cases = {
      {-0.0f, 0.0f, -0.0f, 0.0f, 1.0f},                 // min and max among signed zeros
      {0.0f, -0.0f, 0.0f},                              // a block of zeros
      {-big, big, 1.0f, -1.0f},                         // hi - lo beyond fp32: flagged
      std::vector<float>(40, big),                      // |v| sum overflows: sign1bit flags it
      {6.0e-8f, -6.0e-8f, 3.0e-5f, 1.0e-40f, -1.0e-45f}, // fp16 subnormals, fp32 denormals
  };
  for (const auto& name : codec_names()) {
    for (std::size_t block : {std::size_t{0}, std::size_t{3}}) {
      auto codec = make_codec(name, block);
      for (const auto& v : cases) {
        std::vector<std::uint8_t> cpu(codec->wire_bytes(v.size()));
        codec->encode(v.data(), v.size(), DType::F32, cpu.data());
        EXPECT_EQ(first_difference(gpu_encode(*codec, as_bytes(v), v.size(), DType::F32), cpu), "")
            << name << " block=" << block << " first value " << v[0];
      }
    }
  }
}

TEST(CudaCodec, ConstantBlocksAndZeroCount) {
  REQUIRE_CUDA_DEVICE();
  for (const auto& name : codec_names()) {
    auto codec = make_codec(name, 64);
    std::vector<float> v(200, 3.5f);
    std::vector<std::uint8_t> in(v.size() * 4);
    std::memcpy(in.data(), v.data(), in.size());
    std::vector<std::uint8_t> cpu(codec->wire_bytes(v.size()));
    codec->encode(v.data(), v.size(), DType::F32, cpu.data());
    EXPECT_EQ(gpu_encode(*codec, in, v.size(), DType::F32), cpu) << name;
    EXPECT_NO_THROW(cuda::encode(*codec, nullptr, 0, DType::F32, nullptr)) << name;
  }
}

TEST(CudaCodec, DecodesAsTheCpuDoes) {
  REQUIRE_CUDA_DEVICE();
  for (const auto& name : codec_names()) {
    for (std::size_t block : kBlocks) {
      auto codec = make_codec(name, block);
      for (std::size_t n : kSizes) {
        const auto in = values(n, DType::F32, static_cast<unsigned>(3 * n + block), n % 2 == 1);
        std::vector<std::uint8_t> wire(codec->wire_bytes(n));
        codec->encode(in.data(), n, DType::F32, wire.data());
        for (bool accumulate : {false, true}) {
          std::vector<float> cpu(n);
          for (std::size_t i = 0; i < n; ++i) cpu[i] = 0.125f * static_cast<float>(i % 9);
          const std::vector<float> initial = cpu;
          codec->decode(wire.data(), wire.size(), n, cpu.data(), accumulate);
          EXPECT_EQ(first_difference(gpu_decode(*codec, wire, n, initial, accumulate), cpu, accumulate), "")
              << name << " block=" << block << " n=" << n << " accumulate=" << accumulate;
        }
      }
    }
  }
}

TEST(CudaCodec, RefusesWhatTheCpuRefusesAndWritesNothing) {
  REQUIRE_CUDA_DEVICE();
  const std::size_t n = 100;
  for (const char* name : {"minmax_uint8", "sign1bit"}) {
    auto codec = make_codec(name, 30);  // blocks of 30, 30, 30, 10
    const auto in = values(n, DType::F32, 5, false);
    std::vector<std::uint8_t> good(codec->wire_bytes(n));
    codec->encode(in.data(), n, DType::F32, good.data());
    const std::size_t third_block = 2 * codec->wire_bytes(30);
    std::vector<std::vector<std::uint8_t>> bad;
    for (std::size_t field : {0, 4, 8, 12}) {  // a, b, count, flags of the third block
      auto w = good;
      const float nan = std::numeric_limits<float>::quiet_NaN();
      if (field < 8) {
        std::memcpy(w.data() + third_block + field, &nan, 4);
      } else {
        w[third_block + field] ^= 0x40;
      }
      bad.push_back(w);
    }
    {
      // Two bad blocks: both sides name the first (block 1, at value 30).
      auto w = good;
      w[codec->wire_bytes(30) + 8] ^= 0x40;
      w[third_block + 8] ^= 0x40;
      bad.push_back(w);
    }
    const std::vector<float> initial(n, 9.0f);
    for (const auto& w : bad) {
      std::vector<float> cpu = initial;
      EXPECT_THROW(codec->decode(w.data(), w.size(), n, cpu.data(), false), ProtocolError) << name;
      cuda::DeviceBuffer dwire(w.size()), dout(n * 4);
      dwire.upload(w.data(), w.size());
      dout.upload(initial.data(), n * 4);
      std::string cpu_message, gpu_message;
      try {
        codec->decode(w.data(), w.size(), n, cpu.data(), true);
      } catch (const ProtocolError& e) {
        cpu_message = e.what();
      }
      try {
        cuda::decode(*codec, static_cast<const std::uint8_t*>(dwire.data()), w.size(), n,
                     static_cast<float*>(dout.data()), true);
      } catch (const ProtocolError& e) {
        gpu_message = e.what();
      }
      ASSERT_FALSE(cpu_message.empty()) << name;
      ASSERT_FALSE(gpu_message.empty()) << name << ": the CUDA decoder accepted a corrupt block";
      // Both name the same block: "block at value N".
      const auto where = [](const std::string& m) {
        const auto at = m.find("block at value ");
        return at == std::string::npos ? -1L : std::stol(m.substr(at + 15));
      };
      EXPECT_EQ(where(gpu_message), where(cpu_message)) << gpu_message << " | " << cpu_message;
      std::vector<float> out(n);
      dout.download(out.data(), n * 4);
      EXPECT_EQ(first_difference(out, initial), "") << name << ": a refused decode wrote to the output";
    }
    cuda::DeviceBuffer dwire(good.size()), dout(n * 4);
    EXPECT_THROW(cuda::decode(*codec, static_cast<const std::uint8_t*>(dwire.data()), good.size() - 1, n,
                              static_cast<float*>(dout.data()), false),
                 ProtocolError);
  }
}

}  // namespace bagua
