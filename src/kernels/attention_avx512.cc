// AVX-512 row operations for paged attention (compiled with the AVX-512 flags; F16 through
// vcvtph2ps, tails through masked loads).
#include <immintrin.h>

#include <cstring>

#include "core/fp16.h"
#include "kernels/attention_impl.h"
#include "kernels/quant_formats.h"

// GCC 12's AVX-512 conversion and reduction intrinsics start from _mm512_undefined_*(), which
// -Wmaybe-uninitialized reports once inlined; the lanes are all written, so silence it here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace cleave::kernels {
namespace {

// Up to sixteen elements of a row starting at element i, as floats (lanes past `mask` are 0).
template <DType D>
__m512 Load16(const uint8_t* row, int64_t i, __mmask16 mask) {
  if constexpr (D == DType::kF32) {
    return _mm512_maskz_loadu_ps(mask, reinterpret_cast<const float*>(row) + i);
  } else {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, row + 2 * i));
  }
}

__m512 LoadQ8(const int8_t* qs) {
  return _mm512_cvtepi32_ps(
      _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs))));
}

__mmask16 TailMask(int64_t remaining) {
  return remaining >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << remaining) - 1);
}

struct Avx512Ops {
  template <DType D>
  static float Dot(const float* q, const uint8_t* row, int64_t n) {
    __m512 acc = _mm512_setzero_ps();
    if constexpr (D == DType::kQ8_0) {
      for (int64_t b = 0; b < n / kQK; ++b) {
        const uint8_t* block = row + b * sizeof(BlockQ8_0);
        const auto* qs = reinterpret_cast<const int8_t*>(block + 2);
        const float* qb = q + b * kQK;
        __m512 s = _mm512_mul_ps(_mm512_loadu_ps(qb), LoadQ8(qs));
        s = _mm512_fmadd_ps(_mm512_loadu_ps(qb + 16), LoadQ8(qs + 16), s);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(BlockScale(block)), s, acc);
      }
    } else {
      for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = TailMask(n - i);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + i), Load16<D>(row, i, m), acc);
      }
    }
    return _mm512_reduce_add_ps(acc);
  }

  template <DType D>
  static void Axpy(float w, const uint8_t* row, int64_t n, float* y) {
    if constexpr (D == DType::kQ8_0) {
      for (int64_t b = 0; b < n / kQK; ++b) {
        const uint8_t* block = row + b * sizeof(BlockQ8_0);
        const auto* qs = reinterpret_cast<const int8_t*>(block + 2);
        const __m512 wd = _mm512_set1_ps(w * BlockScale(block));
        float* yb = y + b * kQK;
        _mm512_storeu_ps(yb, _mm512_fmadd_ps(wd, LoadQ8(qs), _mm512_loadu_ps(yb)));
        _mm512_storeu_ps(yb + 16, _mm512_fmadd_ps(wd, LoadQ8(qs + 16), _mm512_loadu_ps(yb + 16)));
      }
    } else {
      const __m512 wv = _mm512_set1_ps(w);
      for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = TailMask(n - i);
        const __m512 sum =
            _mm512_fmadd_ps(wv, Load16<D>(row, i, m), _mm512_maskz_loadu_ps(m, y + i));
        _mm512_mask_storeu_ps(y + i, m, sum);
      }
    }
  }
};

}  // namespace

void PagedAttentionAvx512(const PagedKv& k, const PagedKv& v, const AttentionHead& a) {
  AttendImpl<Avx512Ops>(k, v, a);
}

}  // namespace cleave::kernels
