// Element-wise ops with per-ISA variants against float64 references computed here.
#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <cmath>
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

}  // namespace
}  // namespace cleave::kernels
