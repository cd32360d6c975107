// AVX2 + FMA + F16C row operations for paged attention (compiled with -mavx2 -mfma -mf16c).
#include <immintrin.h>

#include <cstring>

#include "core/fp16.h"
#include "kernels/attention_impl.h"
#include "kernels/quant_formats.h"

namespace cleave::kernels {
namespace {

float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Eight elements of a row starting at element i, as floats.
template <DType D>
__m256 Load8(const uint8_t* row, int64_t i) {
  if constexpr (D == DType::kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + i);
  } else {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i)));
  }
}

float ScalarAt(DType d, const uint8_t* row, int64_t i) {
  if (d == DType::kF32) {
    float x;
    std::memcpy(&x, row + 4 * i, 4);
    return x;
  }
  uint16_t h;
  std::memcpy(&h, row + 2 * i, 2);
  return Fp16ToFp32(h);
}

__m256 LoadQ8(const int8_t* qs) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs))));
}

struct Avx2Ops {
  template <DType D>
  static float Dot(const float* q, const uint8_t* row, int64_t n) {
    if constexpr (D == DType::kQ8_0) {
      __m256 acc = _mm256_setzero_ps();
      for (int64_t b = 0; b < n / kQK; ++b) {
        const uint8_t* block = row + b * sizeof(BlockQ8_0);
        const auto* qs = reinterpret_cast<const int8_t*>(block + 2);
        const float* qb = q + b * kQK;
        __m256 s = _mm256_mul_ps(_mm256_loadu_ps(qb), LoadQ8(qs));
        s = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 8), LoadQ8(qs + 8), s);
        s = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 16), LoadQ8(qs + 16), s);
        s = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 24), LoadQ8(qs + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(BlockScale(block)), s, acc);
      }
      return HorizontalSum(acc);
    } else {
      __m256 acc = _mm256_setzero_ps();
      int64_t i = 0;
      for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), Load8<D>(row, i), acc);
      float dot = HorizontalSum(acc);
      for (; i < n; ++i) dot += q[i] * ScalarAt(D, row, i);
      return dot;
    }
  }

  template <DType D>
  static void Axpy(float w, const uint8_t* row, int64_t n, float* y) {
    if constexpr (D == DType::kQ8_0) {
      for (int64_t b = 0; b < n / kQK; ++b) {
        const uint8_t* block = row + b * sizeof(BlockQ8_0);
        const auto* qs = reinterpret_cast<const int8_t*>(block + 2);
        const __m256 wd = _mm256_set1_ps(w * BlockScale(block));
        float* yb = y + b * kQK;
        for (int j = 0; j < kQK; j += 8) {
          _mm256_storeu_ps(yb + j, _mm256_fmadd_ps(wd, LoadQ8(qs + j), _mm256_loadu_ps(yb + j)));
        }
      }
    } else {
      const __m256 wv = _mm256_set1_ps(w);
      int64_t i = 0;
      for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(wv, Load8<D>(row, i), _mm256_loadu_ps(y + i)));
      }
      for (; i < n; ++i) y[i] += w * ScalarAt(D, row, i);
    }
  }
};

}  // namespace

void PagedAttentionAvx2(const PagedKv& k, const PagedKv& v, const AttentionHead& a) {
  AttendImpl<Avx2Ops>(k, v, a);
}

}  // namespace cleave::kernels
