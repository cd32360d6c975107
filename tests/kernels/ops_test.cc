// Element-wise ops with per-ISA variants against float64 references computed here.
#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace cleave::kernels {
namespace {

// SiluMul on every supported ISA: gates from -100 to 100 (the exp's clamped range and beyond,
// where silu is ~0 or ~gate), random ones, and a length with a SIMD tail; in place (out ==
// gate) as the forward pass calls it. Bound: 4e-6 relative to |silu(g) * u| plus 1e-30 (the
// float32 rounding of a few operations and of a ~2 ulp exp).
TEST(OpsTest, SiluMulEveryIsaMatchesFloat64) {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> gate, up;
  for (float g = -100.0f; g <= 100.0f; g += 0.25f) gate.push_back(g);
  for (int i = 0; i < 1000; ++i) gate.push_back(normal(rng));
  gate.push_back(0.0f);
  gate.push_back(-0.0f);
  const int64_t n = static_cast<int64_t>(gate.size());
  ASSERT_NE(n % 16, 0);  // a masked tail
  for (int64_t i = 0; i < n; ++i) up.push_back(normal(rng));
  for (cpu::Isa isa : cpu::SupportedIsas()) {
    std::vector<float> out = gate;
    SiluMulWith(isa, out.data(), up.data(), n, out.data());
    for (int64_t i = 0; i < n; ++i) {
      const double g = gate[i];
      const double want = g / (1.0 + std::exp(-g)) * up[i];
      ASSERT_NEAR(out[i], want, 4e-6 * std::fabs(want) + 1e-30)
          << cpu::IsaName(isa) << " gate=" << gate[i] << " up=" << up[i];
    }
  }
}

// ExpShifted: exp(x - shift) within the vector exp's bound of a float64 exp, exactly 0 for -inf
// and below the -87 floor on every level, and the returned sum equals the float64 sum of what
// was written (to double rounding).
TEST(OpsTest, ExpShiftedEveryIsaMatchesFloat64) {
  std::mt19937 rng(10);
  std::normal_distribution<float> normal(0.0f, 8.0f);
  std::vector<float> x;
  for (float v = -120.0f; v <= 0.0f; v += 0.125f) x.push_back(v);
  for (int i = 0; i < 49152; ++i) x.push_back(std::min(0.0f, normal(rng)));
  x.push_back(-std::numeric_limits<float>::infinity());
  const int64_t n = static_cast<int64_t>(x.size());
  ASSERT_NE(n % 16, 0);  // a masked tail
  const float shift = 3.5f;
  for (float& v : x) v += shift;
  for (cpu::Isa isa : cpu::SupportedIsas()) {
    std::vector<float> out(n, NAN);
    const double sum = ExpShiftedWith(isa, x.data(), shift, n, out.data());
    double written = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double v = static_cast<double>(x[i]) - shift;
      if (!(static_cast<float>(v) >= -87.0f)) {
        ASSERT_EQ(out[i], 0.0f) << cpu::IsaName(isa) << " x=" << x[i];
      } else {
        const double want = std::exp(v);
        ASSERT_NEAR(out[i], want, 4e-7 * want) << cpu::IsaName(isa) << " x=" << x[i];
      }
      written += out[i];
    }
    EXPECT_NEAR(sum, written, 1e-12 * written) << cpu::IsaName(isa);
  }
}

}  // namespace
}  // namespace cleave::kernels
