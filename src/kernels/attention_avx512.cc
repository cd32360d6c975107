// AVX-512 row operations for paged attention (compiled with the AVX-512 flags; F16 through
// vcvtph2ps, tails through masked loads).
#include <immintrin.h>

#include <cstring>

#include "core/fp16.h"
#include "kernels/attention_impl.h"
#include "kernels/exp_avx512.h"
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
  static float ExpSum(float* x, int64_t n, float max) {
    const __m512 mv = _mm512_set1_ps(max);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = TailMask(n - i);
      const __m512 e = Exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mv));
      _mm512_mask_storeu_ps(x + i, m, e);
      sum = _mm512_mask_add_ps(sum, m, sum, e);
    }
    return _mm512_reduce_add_ps(sum);
  }

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

  // Four rows at once (see HasDot4): each q chunk is loaded once, four independent FMA chains,
  // one transposing reduction. Q8_0 keys use Dot (their per-block scales leave no shared work).
  template <DType D>
  static void Dot4(const float* q, const uint8_t* const* rows, int64_t n, float* out) {
    if constexpr (D == DType::kQ8_0) {
      for (int j = 0; j < 4; ++j) out[j] = Dot<D>(q, rows[j], n);
    } else {
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                       _mm512_setzero_ps()};
      for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = TailMask(n - i);
        const __m512 qv = _mm512_maskz_loadu_ps(m, q + i);
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) acc[j] = _mm512_fmadd_ps(qv, Load16<D>(rows[j], i, m), acc[j]);
      }
      __m128 h[4];
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m256 h256 = _mm256_add_ps(_mm512_castps512_ps256(acc[j]),
                                          _mm512_maskz_extractf32x8_ps(0xff, acc[j], 1));
        h[j] = _mm_add_ps(_mm256_castps256_ps128(h256), _mm256_extractf128_ps(h256, 1));
      }
      _mm_storeu_ps(out, _mm_hadd_ps(_mm_hadd_ps(h[0], h[1]), _mm_hadd_ps(h[2], h[3])));
    }
  }

  // y += w[0] rows[0]; y += w[1] rows[1]; ... for four rows: the operations of four Axpy calls
  // in the same order (so the same bits), with y kept in a register across the four.
  template <DType D>
  static void Axpy4(const float* w, const uint8_t* const* rows, int64_t n, float* y) {
    if constexpr (D == DType::kQ8_0) {
      for (int j = 0; j < 4; ++j) Axpy<D>(w[j], rows[j], n, y);
    } else {
      __m512 wv[4];
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) wv[j] = _mm512_set1_ps(w[j]);
      for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = TailMask(n - i);
        __m512 sum = _mm512_maskz_loadu_ps(m, y + i);
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) sum = _mm512_fmadd_ps(wv[j], Load16<D>(rows[j], i, m), sum);
        _mm512_mask_storeu_ps(y + i, m, sum);
      }
    }
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
