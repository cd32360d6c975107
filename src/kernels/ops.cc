#include "kernels/ops.h"

#include <algorithm>
#include <cmath>

#include "core/status.h"

namespace cleave::kernels {

void RmsNorm(const float* x, const float* weight, float eps, int64_t n, float* out) {
  double sum_sq = 0.0;
  for (int64_t i = 0; i < n; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(sum_sq / n + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * weight[i];
}

void SiluMulAvx512(const float* gate, const float* up, int64_t n,
                   float* out);  // activation_avx512.cc
double ExpShiftedAvx512(const float* x, float shift, int64_t n,
                        float* out);  // activation_avx512.cc

namespace {

void SiluMulScalar(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

using SiluMulFn = void (*)(const float*, const float*, int64_t, float*);

// AVX2 has no vector exp of its own here and uses the scalar loop.
SiluMulFn SiluMulFor(cpu::Isa isa) {
  return isa == cpu::Isa::kAvx512 ? SiluMulAvx512 : SiluMulScalar;
}

// Below this, exp underflows to (near) denormals: treated as exactly zero on every level.
constexpr float kExpFloor = -87.0f;

double ExpShiftedScalar(const float* x, float shift, int64_t n, float* out) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i] - shift;
    out[i] = v < kExpFloor ? 0.0f : std::exp(v);
    sum += out[i];
  }
  return sum;
}

using ExpShiftedFn = double (*)(const float*, float, int64_t, float*);

ExpShiftedFn ExpShiftedFor(cpu::Isa isa) {
  return isa == cpu::Isa::kAvx512 ? ExpShiftedAvx512 : ExpShiftedScalar;
}

}  // namespace

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  static const SiluMulFn fn = SiluMulFor(cpu::ActiveIsa());
  fn(gate, up, n, out);
}

void SiluMulWith(cpu::Isa isa, const float* gate, const float* up, int64_t n, float* out) {
  CLEAVE_CHECK(cpu::IsaSupported(isa), "ISA {} is not supported here", cpu::IsaName(isa));
  SiluMulFor(isa)(gate, up, n, out);
}

double ExpShifted(const float* x, float shift, int64_t n, float* out) {
  static const ExpShiftedFn fn = ExpShiftedFor(cpu::ActiveIsa());
  return fn(x, shift, n, out);
}

double ExpShiftedWith(cpu::Isa isa, const float* x, float shift, int64_t n, float* out) {
  CLEAVE_CHECK(cpu::IsaSupported(isa), "ISA {} is not supported here", cpu::IsaName(isa));
  return ExpShiftedFor(isa)(x, shift, n, out);
}

void Add(const float* x, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void Softmax(float* x, int64_t n) {
  float max_value = x[0];
  for (int64_t i = 1; i < n; ++i) max_value = std::max(max_value, x[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max_value);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void Rope(float* x, int64_t num_heads, int64_t head_dim, int64_t position, const float* inv_freq,
          bool neox) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float theta = static_cast<float>(position) * inv_freq[i];
    const float c = std::cos(theta), s = std::sin(theta);
    for (int64_t h = 0; h < num_heads; ++h) {
      float* v = x + h * head_dim;
      const int64_t a = neox ? i : 2 * i;
      const int64_t b = neox ? i + half : 2 * i + 1;
      const float x0 = v[a], x1 = v[b];
      v[a] = x0 * c - x1 * s;
      v[b] = x0 * s + x1 * c;
    }
  }
}

}  // namespace cleave::kernels
