// AVX-512 SwiGLU activation and shifted exp (compiled with the AVX-512 flags); ops.cc dispatches to
// it.
#include <immintrin.h>

#include <cstdint>

#include "kernels/exp_avx512.h"

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which -Wmaybe-uninitialized
// reports once inlined; the lanes are all written.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace cleave::kernels {

// out = silu(gate) * up = gate / (1 + exp(-gate)) * up, 16 lanes at a time (tail masked).
void SiluMulAvx512(const float* gate, const float* up, int64_t n, float* out) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m =
        n - i >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 e = Exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
    const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, e));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, up + i)));
  }
}

// out = exp(x - shift), 0 below -87 (see ops.h); the sum in two 8-lane double accumulators,
// reduced in a fixed order.
double ExpShiftedAvx512(const float* x, float shift, int64_t n, float* out) {
  const __m512 s = _mm512_set1_ps(shift), floor = _mm512_set1_ps(-87.0f);
  __m512d sum_lo = _mm512_setzero_pd(), sum_hi = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m =
        n - i >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), s);
    const __mmask16 live = _mm512_mask_cmp_ps_mask(m, v, floor, _CMP_GE_OQ);
    const __m512 e = _mm512_maskz_mov_ps(live, Exp512(v));
    _mm512_mask_storeu_ps(out + i, m, e);
    sum_lo = _mm512_add_pd(sum_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    sum_hi = _mm512_add_pd(sum_hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
  }
  alignas(64) double lanes[8];
  _mm512_store_pd(lanes, _mm512_add_pd(sum_lo, sum_hi));
  double sum = 0.0;
  for (double lane : lanes) sum += lane;
  return sum;
}

}  // namespace cleave::kernels
