#include "core/fp16.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/dtype.h"

namespace cleave {
namespace {

TEST(Fp16Test, RoundTripsEveryHalf) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = Fp16ToFp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(Fp16ToFp32(Fp32ToFp16(f))));
      continue;
    }
    ASSERT_EQ(Fp32ToFp16(f), h) << std::hex << h;
  }
}

TEST(Fp16Test, KnownValuesAndRounding) {
  EXPECT_EQ(Fp32ToFp16(1.0f), 0x3c00);
  EXPECT_EQ(Fp32ToFp16(-2.0f), 0xc000);
  EXPECT_EQ(Fp32ToFp16(65504.0f), 0x7bff);
  EXPECT_EQ(Fp32ToFp16(1e6f), 0x7c00);                // overflow to inf
  EXPECT_EQ(Fp32ToFp16(5.9604645e-8f), 0x0001);       // smallest subnormal
  EXPECT_EQ(Fp32ToFp16(1.0f + 1.0f / 2048), 0x3c00);  // tie rounds to even
  EXPECT_EQ(Fp32ToFp16(1.0f + 3.0f / 2048), 0x3c02);  // tie rounds to even (up)
  EXPECT_FLOAT_EQ(Fp16ToFp32(0x3555), 0.333251953125f);
}

TEST(Bf16Test, RoundTripAndRounding) {
  EXPECT_EQ(Fp32ToBf16(1.0f), 0x3f80);
  EXPECT_FLOAT_EQ(Bf16ToFp32(0x3f80), 1.0f);
  EXPECT_FLOAT_EQ(Bf16ToFp32(Fp32ToBf16(3.140625f)), 3.140625f);
  EXPECT_TRUE(std::isnan(Bf16ToFp32(Fp32ToBf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(DTypeTest, SizesAndRows) {
  EXPECT_EQ(DTypeInfoOf(DType::kQ4_K).block_bytes, 144u);
  EXPECT_EQ(*RowBytes(DType::kQ4_1, 576), 18u * 20u);
  EXPECT_FALSE(RowBytes(DType::kQ6_K, 576).has_value());  // 576 is not a multiple of 256
  EXPECT_FALSE(GetDTypeInfo(4).has_value());              // retired Q4_2
  EXPECT_EQ(GetDTypeInfo(30)->name, "bf16");
}

}  // namespace
}  // namespace cleave
