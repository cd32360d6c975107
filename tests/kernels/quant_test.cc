// Block layouts of every supported weight format: hand-written blocks with values worked out by
// hand from the layout documented in kernels/quant_formats.h, a cross-check against the
// independent `gguf` Python package, and quantize/dequantize round-trip error bounds.
#include "kernels/quant_formats.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/fp16.h"
#include "tests/testing/paths.h"

namespace cleave::kernels {
namespace {

std::vector<float> Dequant(DType dtype, const void* data, int64_t n) {
  std::vector<float> out(n);
  DequantizeRow(dtype, data, out.data(), n);
  return out;
}

TEST(QuantFormats, SupportedTypes) {
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_1,
                  DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    EXPECT_TRUE(IsSupportedWeightType(t)) << DTypeName(t);
  }
  for (DType t : {DType::kQ5_0, DType::kQ2_K, DType::kQ3_K, DType::kIQ4_NL, DType::kI32}) {
    EXPECT_FALSE(IsSupportedWeightType(t)) << DTypeName(t);
  }
}

TEST(QuantFormats, Q8_0HandWritten) {
  uint8_t block[34];
  block[0] = 0x00, block[1] = 0x38;  // f16 0.5
  for (int i = 0; i < 32; ++i) block[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i - 16));
  block[2 + 31] = 0x81;  // int8 -127
  auto y = Dequant(DType::kQ8_0, block, 32);
  EXPECT_EQ(y[0], -8.0f);
  EXPECT_EQ(y[16], 0.0f);
  EXPECT_EQ(y[30], 7.0f);
  EXPECT_EQ(y[31], -63.5f);
}

TEST(QuantFormats, Q4_0HandWritten) {
  // Two blocks; block 1 has d = -0.25 to check the sign of d is honoured.
  uint8_t blocks[36];
  blocks[0] = 0x00, blocks[1] = 0x40;  // f16 2.0
  for (int j = 0; j < 16; ++j) blocks[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  blocks[18] = 0x00, blocks[19] = 0xb4;                // f16 -0.25
  for (int j = 0; j < 16; ++j) blocks[20 + j] = 0xf0;  // low nibble 0, high 15
  auto y = Dequant(DType::kQ4_0, blocks, 64);
  EXPECT_EQ(y[0], -16.0f);   // 2 * (0 - 8)
  EXPECT_EQ(y[5], -6.0f);    // 2 * (5 - 8)
  EXPECT_EQ(y[15], 14.0f);   // 2 * (15 - 8)
  EXPECT_EQ(y[16], 14.0f);   // high nibble of byte 0 is 15
  EXPECT_EQ(y[31], -16.0f);  // high nibble of byte 15 is 0
  EXPECT_EQ(y[32], 2.0f);    // -0.25 * (0 - 8)
  EXPECT_EQ(y[63], -1.75f);  // -0.25 * (15 - 8)
}

TEST(QuantFormats, Q4_1HandWritten) {
  uint8_t block[20];
  block[0] = 0x00, block[1] = 0x34;  // d = 0.25
  block[2] = 0x00, block[3] = 0xbc;  // m = -1.0
  for (int j = 0; j < 16; ++j) block[4 + j] = static_cast<uint8_t>(j | (3 << 4));
  auto y = Dequant(DType::kQ4_1, block, 32);
  EXPECT_EQ(y[0], -1.0f);
  EXPECT_EQ(y[15], 2.75f);   // 0.25 * 15 - 1
  EXPECT_EQ(y[16], -0.25f);  // 0.25 * 3 - 1
  EXPECT_EQ(y[31], -0.25f);
}

// Scales/mins used by the K-quant blocks below:
//   sc = {1, 2, 3, 4, 33, 50, 63, 17}, m = {0, 5, 10, 63, 40, 1, 20, 48}
// packed by hand into the 12 scale bytes (see quant_formats.h):
//   bytes 0..3  = sc[0..3] | (sc[4..7] >> 4) << 6   = 0x81 0xc2 0xc3 0x44
//   bytes 4..7  = m[0..3]  | (m[4..7] >> 4) << 6    = 0x80 0x05 0x4a 0xff
//   bytes 8..11 = (sc[4..7] & 15) | (m[4..7] & 15) << 4 = 0x81 0x12 0x4f 0x01
constexpr uint8_t kKScales[12] = {0x81, 0xc2, 0xc3, 0x44, 0x80, 0x05,
                                  0x4a, 0xff, 0x81, 0x12, 0x4f, 0x01};
constexpr int kSc[8] = {1, 2, 3, 4, 33, 50, 63, 17};
constexpr int kM[8] = {0, 5, 10, 63, 40, 1, 20, 48};

TEST(QuantFormats, Q4_KHandWritten) {
  BlockQ4_K b;
  b.d = 0x3c00;     // 1.0
  b.dmin = 0x3800;  // 0.5
  std::memcpy(b.scales, kKScales, 12);
  // Chunk c byte l: low nibble (sub-block 2c) = l % 16, high nibble (sub-block 2c+1) = 15 - l % 16.
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l)
      b.qs[32 * c + l] = static_cast<uint8_t>((l % 16) | ((15 - l % 16) << 4));
  }
  auto y = Dequant(DType::kQ4_K, &b, 256);
  EXPECT_EQ(y[32 * 4 + 3], 79.0f);   // sub-block 4 (chunk 2, low), q = 3: 33 * 3 - 0.5 * 40
  EXPECT_EQ(y[32 * 7 + 5], 146.0f);  // sub-block 7 (chunk 3, high), q = 10: 17 * 10 - 0.5 * 48
  EXPECT_EQ(y[32 * 3 + 0], 28.5f);   // sub-block 3 (chunk 1, high), q = 15: 4 * 15 - 0.5 * 63
  EXPECT_EQ(y[0], 0.0f);             // sub-block 0, q = 0, min 0
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 32; ++l) {
      const int q = j % 2 == 0 ? l % 16 : 15 - l % 16;
      EXPECT_EQ(y[32 * j + l], 1.0f * kSc[j] * q - 0.5f * kM[j]) << j << " " << l;
    }
  }
}

TEST(QuantFormats, Q5_KHandWritten) {
  BlockQ5_K b;
  b.d = 0x3c00;
  b.dmin = 0x3800;
  std::memcpy(b.scales, kKScales, 12);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l)
      b.qs[32 * c + l] = static_cast<uint8_t>((l % 16) | ((15 - l % 16) << 4));
  }
  // qh[l] = 1 << (l % 8): element 32j + l gets the +16 bit exactly when j == l % 8.
  for (int l = 0; l < 32; ++l) b.qh[l] = static_cast<uint8_t>(1 << (l % 8));
  auto y = Dequant(DType::kQ5_K, &b, 256);
  EXPECT_EQ(y[32 * 3 + 3], 80.5f);             // q = 12 + 16: 4 * 28 - 0.5 * 63
  EXPECT_EQ(y[32 * 3 + 4], 12.5f);             // q = 11, no high bit: 4 * 11 - 31.5
  EXPECT_EQ(y[32 * 6 + 14], 63.0f * 30 - 10);  // q = 14 + 16
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 32; ++l) {
      const int q = (j % 2 == 0 ? l % 16 : 15 - l % 16) + (l % 8 == j ? 16 : 0);
      EXPECT_EQ(y[32 * j + l], 1.0f * kSc[j] * q - 0.5f * kM[j]) << j << " " << l;
    }
  }
}

TEST(QuantFormats, Q6_KHandWritten) {
  BlockQ6_K b;
  for (int k = 0; k < 128; ++k) b.ql[k] = static_cast<uint8_t>(k);
  for (int k = 0; k < 64; ++k) b.qh[k] = static_cast<uint8_t>((k * 37) & 0xff);
  for (int g = 0; g < 16; ++g) b.scales[g] = static_cast<int8_t>(g - 8);
  b.d = 0x3800;  // 0.5
  auto y = Dequant(DType::kQ6_K, &b, 256);
  // e = 45: half 0, r = 45: low = ql[45] & 15 = 13; qh[13] = 481 & 255 = 0b11100001,
  // (>> 2) & 3 = 0; q = 13 - 32 = -19; scale[2] = -6: 0.5 * -6 * -19.
  EXPECT_EQ(y[45], 57.0f);
  // e = 127: r = 127: low = ql[63] >> 4 = 3; qh[31] = 1147 & 255 = 0b01111011, >> 6 = 1;
  // q = 19 - 32 = -13; scale[7] = -1.
  EXPECT_EQ(y[127], 6.5f);
  // e = 200: half 1, r = 72: low = ql[72] >> 4 = 4; qh[40] = 1480 & 255 = 0b11001000,
  // (>> 4) & 3 = 0; q = -28; scale[12] = 4.
  EXPECT_EQ(y[200], -56.0f);
  // e = 150: half 1, r = 22: low = ql[86] & 15 = 6; qh[54] = 1998 & 255 = 0b11001110, & 3 = 2;
  // q = 6 + 32 - 32 = 6; scale[9] = 1.
  EXPECT_EQ(y[150], 3.0f);
}

TEST(QuantFormats, PlainFloats) {
  const uint16_t h[3] = {0x3c00, 0xc000, 0x3555};
  auto y = Dequant(DType::kF16, h, 3);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], -2.0f);
  EXPECT_NEAR(y[2], 1.0f / 3, 1e-3);
  const uint16_t bf[2] = {0x3f80, 0xc0a0};
  auto z = Dequant(DType::kBF16, bf, 2);
  EXPECT_EQ(z[0], 1.0f);
  EXPECT_EQ(z[1], -5.0f);
}

std::vector<char> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

// Random blocks dequantized by gguf.quants (tests/reference/quant_fixture.py) must match ours.
TEST(QuantFormats, MatchesGgufPythonPackage) {
  const std::string python = testing::ReferencePython();
  if (python.empty()) GTEST_SKIP() << "no reference venv (.venv); run the setup script";
  const std::string dir = testing::TempDir() + "/quant_fixture";
  const std::string cmd =
      python + " " + testing::SourceDir() + "/tests/reference/quant_fixture.py " + dir;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const std::pair<const char*, DType> formats[] = {{"q8_0", DType::kQ8_0}, {"q4_0", DType::kQ4_0},
                                                   {"q4_1", DType::kQ4_1}, {"q4_k", DType::kQ4_K},
                                                   {"q5_k", DType::kQ5_K}, {"q6_k", DType::kQ6_K},
                                                   {"f16", DType::kF16},   {"bf16", DType::kBF16}};
  for (const auto& [name, dtype] : formats) {
    SCOPED_TRACE(name);
    std::vector<char> raw = ReadFile(dir + "/" + name + ".bin");
    std::vector<char> expected_bytes = ReadFile(dir + "/" + name + ".f32");
    const int64_t n = static_cast<int64_t>(expected_bytes.size() / 4);
    ASSERT_GT(n, 0);
    ASSERT_EQ(static_cast<uint64_t>(raw.size()), *RowBytes(dtype, n));
    std::vector<float> expected(n);
    std::memcpy(expected.data(), expected_bytes.data(), n * 4);
    auto y = Dequant(dtype, raw.data(), n);
    int mismatches = 0;
    for (int64_t i = 0; i < n; ++i) {
      // gguf computes e.g. d * (q - 8) where we compute the same in another order; allow a few
      // float ulps.
      const float tol = 4e-7f * std::fabs(expected[i]) + 1e-30f;
      if (!(std::fabs(y[i] - expected[i]) <= tol) && ++mismatches <= 5) {
        ADD_FAILURE() << "element " << i << ": ours " << y[i] << " gguf " << expected[i];
      }
    }
    EXPECT_EQ(mismatches, 0);
  }
}

// Round trip on Gaussian data: per-format worst-case or RMS error bounds.
struct RoundTripCase {
  DType dtype;
  // Max |x - x'| allowed, as a fraction of the block's max |x| (legacy formats; the bound is
  // one quantization step, which round-to-nearest stays within, plus f16 scale rounding).
  double max_rel_to_block_amax;
  // RMS(x - x') / RMS(x) allowed over the whole row (K-quants; a b-bit uniform quantizer over a
  // Gaussian block spread of ~+-2.5 sigma has RMS error ~ 5 / 2^b / sqrt(12) sigma).
  double max_rel_rms;
};

TEST(QuantFormats, RoundTripErrorBounds) {
  const RoundTripCase cases[] = {
      {DType::kF32, 0, 0},
      {DType::kF16, 1.0 / 1024, 1.0 / 2048},
      {DType::kBF16, 1.0 / 128, 1.0 / 256},
      {DType::kQ8_0, 1.0 / 254 + 1e-3, 0.01},
      {DType::kQ4_0, 1.0 / 8 + 1e-3, 0.12},
      {DType::kQ4_1, 1.0 / 15 + 1e-3, 0.08},
      {DType::kQ4_K, 0.2, 0.10},
      {DType::kQ5_K, 0.1, 0.05},
      {DType::kQ6_K, 1.0 / 32 + 0.01, 0.03},
  };
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n = 4096;
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng) * 0.02f;
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(DTypeName(c.dtype)));
    std::vector<uint8_t> q(*RowBytes(c.dtype, n));
    QuantizeRow(c.dtype, x.data(), q.data(), n);
    auto y = Dequant(c.dtype, q.data(), n);
    double err2 = 0, x2 = 0;
    for (int64_t b = 0; b < n / 32; ++b) {
      float amax = 0;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[32 * b + i]));
      for (int i = 0; i < 32; ++i) {
        const int64_t k = 32 * b + i;
        const double e = std::fabs(static_cast<double>(y[k]) - x[k]);
        if (c.max_rel_to_block_amax > 0) {
          EXPECT_LE(e, c.max_rel_to_block_amax * amax) << "element " << k;
        }
        err2 += e * e;
        x2 += static_cast<double>(x[k]) * x[k];
      }
    }
    const double rel_rms = std::sqrt(err2 / x2);
    if (c.dtype == DType::kF32) {
      EXPECT_EQ(rel_rms, 0);
    } else {
      EXPECT_LE(rel_rms, c.max_rel_rms);
    }
    std::printf("%-5s round-trip relative RMS error %.4f\n",
                std::string(DTypeName(c.dtype)).c_str(), rel_rms);
  }
}

}  // namespace
}  // namespace cleave::kernels
