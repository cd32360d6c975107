// A vectorized exp for the AVX-512 translation units (attention_avx512.cc,
// activation_avx512.cc). Include only from files compiled with the AVX-512 flags; internal
// linkage, so copies built with different flags never merge.
#pragma once

#include <immintrin.h>

namespace cleave::kernels {
namespace {

// exp(x) within ~2 ulp for x in [-88, 88]: x = k ln2 + r with |r| <= ln2 / 2 (ln2 split in two
// parts so k ln2 is exact enough), exp(r) by a degree-6 minimax polynomial (the Cephes expf
// coefficients), times 2^k by vscalefps. Inputs are clamped to [-88, 88]: below, exp(-88) ~
// 6e-39 stands in for smaller values (callers add it to sums >= 1 or multiply it by bounded
// values); above, the result is finite where the true one would overflow.
inline __m512 Exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-88.0f)), _mm512_set1_ps(88.0f));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, k);
}

}  // namespace
}  // namespace cleave::kernels
