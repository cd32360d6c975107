// MatMul kernel bodies shared by the x86 levels. Included only by matmul_avx2.cc and
// matmul_avx512.cc, each compiled with its own ISA flags; everything here has internal linkage
// (unnamed namespace) so the two copies never merge at link time. The level-specific parts are
// the int16 dot product of one block (`Ops::Dot`) and the activation quantizer, passed in as
// template parameters.
//
// Quantized weights: R rows at a time are unpacked (SIMD) into L1-resident scratch as integer
// codes in element order plus one float scale a per block of 32 and, for formats with an
// offset, one float b per 16 (w = a * code + b):
//   kU8  uint8 codes (Q4_1, Q4_K, Q5_K: offset b = m or -dmin * m)
//   kS8  int8 codes, no offset (Q8_0; Q4_0 as q - 8)
//   kS16 int16 codes, no offset (Q6_K as (q - 32) * scale16, |code| <= 4096, a = d)
// Every tile of T tokens then runs over them with R x T accumulators in registers, so each
// unpacked weight block is reused T times and each activation block R times. A block's codes
// are widened to int16 (elements 0..15 and 16..31, two 256-bit halves), multiplied with the
// int16 activations into 8 int32 lanes, converted to float and scaled by a * dx.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/fp16.h"
#include "core/status.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/quant_formats.h"

namespace cleave::kernels::cpu {
namespace {

inline float HalfToFloat(uint16_t h) {
  return _cvtsh_ss(h);
}

inline float HSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int32_t HSumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// QuantizeRowFn in AVX2, bit-identical to QuantizeActivationRowScalar: the same float
// operations (|x| max, amax / 32767, 32767 / amax, x * inv rounded to nearest even).
inline void QuantizeRowX86(const float* x, int64_t num_blocks, int16_t* qs, float* d, float* s16) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t j = 0; j < num_blocks; ++j) {
    const float* xb = x + 32 * j;
    __m256 v[4];
    for (int k = 0; k < 4; ++k) v[k] = _mm256_loadu_ps(xb + 8 * k);
    const __m256 m =
        _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask)),
                      _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float scale = amax / 32767;
    const __m256 inv = _mm256_set1_ps(amax > 0 ? 32767 / amax : 0);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], inv));
    // packs interleaves 128-bit lanes: (q0 lo, q1 lo, q0 hi, q1 hi); 0xd8 restores order.
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + 32 * j),
                        _mm256_permute4x64_epi64(_mm256_packs_epi32(q[0], q[1]), 0xd8));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + 32 * j + 16),
                        _mm256_permute4x64_epi64(_mm256_packs_epi32(q[2], q[3]), 0xd8));
    d[j] = scale;
    s16[2 * j] = scale * static_cast<float>(HSumI32(_mm256_add_epi32(q[0], q[1])));
    s16[2 * j + 1] = scale * static_cast<float>(HSumI32(_mm256_add_epi32(q[2], q[3])));
  }
}

// Unpacked rows, 64-byte aligned, reused across calls on one thread.
class RowScratch {
 public:
  // Room for `num_rows` rows of `cols` elements.
  void Reserve(int num_rows, int64_t cols) {
    cols_ = cols;
    q_stride_ = (2 * cols + 63) / 64 * 64;  // bytes: int16 codes at most
    a_stride_ = (cols / 32 + 15) / 16 * 16;
    b_stride_ = (cols / 16 + 15) / 16 * 16;
    f_stride_ = (cols + 15) / 16 * 16;
    const size_t floats = static_cast<size_t>(num_rows) * (a_stride_ + b_stride_ + f_stride_);
    const size_t bytes = static_cast<size_t>(num_rows) * q_stride_ + floats * sizeof(float) + 64;
    if (storage_.size() < bytes) storage_.assign(bytes, 0);
    auto base = reinterpret_cast<uintptr_t>(storage_.data());
    uint8_t* p = storage_.data() + (64 - base % 64) % 64;
    q_ = p;
    a_ = reinterpret_cast<float*>(p + num_rows * q_stride_);
    b_ = a_ + num_rows * a_stride_;
    f_ = b_ + num_rows * b_stride_;
  }
  uint8_t* q(int r) { return q_ + r * q_stride_; }
  float* a(int r) { return a_ + r * a_stride_; }
  float* b(int r) { return b_ + r * b_stride_; }
  float* f(int r) { return f_ + r * f_stride_; }
  int64_t b_stride() const { return b_stride_; }

 private:
  std::vector<uint8_t> storage_;
  int64_t cols_ = 0, q_stride_ = 0, a_stride_ = 0, b_stride_ = 0, f_stride_ = 0;
  uint8_t* q_ = nullptr;
  float *a_ = nullptr, *b_ = nullptr, *f_ = nullptr;
};

enum class Codes { kU8, kS8, kS16 };

inline Codes CodesOf(DType dtype) {
  switch (dtype) {
    case DType::kQ8_0:
    case DType::kQ4_0:
      return Codes::kS8;
    case DType::kQ6_K:
      return Codes::kS16;
    default:
      return Codes::kU8;
  }
}

// Writes the codes (CodesOf(dtype)) to q, a[cols / 32] and, for kU8, b[cols / 16].
inline void UnpackRowX86(DType dtype, const uint8_t* row, int64_t cols, uint8_t* q, float* a,
                         float* b) {
  const __m128i m4 = _mm_set1_epi8(0x0f);
  const __m256i m4y = _mm256_set1_epi8(0x0f);
  switch (dtype) {
    case DType::kQ8_0:
      for (int64_t j = 0; j < cols / kQK; ++j) {
        const auto& blk = reinterpret_cast<const BlockQ8_0*>(row)[j];
        _mm256_store_si256(reinterpret_cast<__m256i*>(q + 32 * j),
                           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.qs)));
        a[j] = HalfToFloat(blk.d);
      }
      return;
    case DType::kQ4_0:
    case DType::kQ4_1: {
      const bool q4_0 = dtype == DType::kQ4_0;
      const int64_t block_bytes = q4_0 ? 18 : 20;
      const __m128i offset = _mm_set1_epi8(q4_0 ? 8 : 0);
      for (int64_t j = 0; j < cols / kQK; ++j) {
        const uint8_t* blk = row + j * block_bytes;
        uint16_t dh, mh = 0;
        std::memcpy(&dh, blk, 2);
        if (!q4_0) std::memcpy(&mh, blk + 2, 2);
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + block_bytes - 16));
        _mm_store_si128(reinterpret_cast<__m128i*>(q + 32 * j),
                        _mm_sub_epi8(_mm_and_si128(v, m4), offset));
        _mm_store_si128(reinterpret_cast<__m128i*>(q + 32 * j + 16),
                        _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), m4), offset));
        a[j] = HalfToFloat(dh);
        if (!q4_0) b[2 * j] = b[2 * j + 1] = HalfToFloat(mh);
      }
      return;
    }
    case DType::kQ4_K:
    case DType::kQ5_K: {
      const bool q5 = dtype == DType::kQ5_K;
      const __m256i bit4 = _mm256_set1_epi8(0x10);
      for (int64_t i = 0; i < cols / kQK_K; ++i) {
        const uint8_t *scales, *qh = nullptr, *qs;
        uint16_t dh, dminh;
        if (!q5) {
          const auto& blk = reinterpret_cast<const BlockQ4_K*>(row)[i];
          scales = blk.scales;
          qs = blk.qs;
          dh = blk.d;
          dminh = blk.dmin;
        } else {
          const auto& blk = reinterpret_cast<const BlockQ5_K*>(row)[i];
          scales = blk.scales;
          qh = blk.qh;
          qs = blk.qs;
          dh = blk.d;
          dminh = blk.dmin;
        }
        const float d = HalfToFloat(dh), dmin = HalfToFloat(dminh);
        __m256i hbits =
            q5 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh)) : _mm256_setzero_si256();
        uint8_t* qo = q + kQK_K * i;
        for (int c = 0; c < 4; ++c) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * c));
          __m256i lo = _mm256_and_si256(v, m4y);
          __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4y);
          if (q5) {
            lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(hbits, 4), bit4));
            hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(hbits, 3), bit4));
            hbits = _mm256_srli_epi16(hbits, 2);
          }
          _mm256_store_si256(reinterpret_cast<__m256i*>(qo + 64 * c), lo);
          _mm256_store_si256(reinterpret_cast<__m256i*>(qo + 64 * c + 32), hi);
        }
        for (int j = 0; j < 8; ++j) {
          uint8_t sc, m;
          UnpackKScaleMin(scales, j, &sc, &m);
          a[8 * i + j] = d * sc;
          b[16 * i + 2 * j] = b[16 * i + 2 * j + 1] = -dmin * m;
        }
      }
      return;
    }
    case DType::kQ6_K: {
      const __m256i hmask = _mm256_set1_epi8(0x30);
      const __m256i offset = _mm256_set1_epi16(32);
      auto* q16 = reinterpret_cast<int16_t*>(q);
      for (int64_t i = 0; i < cols / kQK_K; ++i) {
        const auto& blk = reinterpret_cast<const BlockQ6_K*>(row)[i];
        int16_t* qo = q16 + kQK_K * i;
        // 32 codes (elements e..e+31, scale groups g and g + 1) -> (q - 32) * scale as int16.
        const auto store = [&](__m256i v, int e) {
          const int g = e / 16;
          const __m256i lo = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(v));
          const __m256i hi = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(v, 1));
          _mm256_store_si256(
              reinterpret_cast<__m256i*>(qo + e),
              _mm256_mullo_epi16(_mm256_sub_epi16(lo, offset), _mm256_set1_epi16(blk.scales[g])));
          _mm256_store_si256(reinterpret_cast<__m256i*>(qo + e + 16),
                             _mm256_mullo_epi16(_mm256_sub_epi16(hi, offset),
                                                _mm256_set1_epi16(blk.scales[g + 1])));
        };
        for (int h = 0; h < 2; ++h) {
          const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.ql + 64 * h));
          const __m256i ql1 =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.ql + 64 * h + 32));
          const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.qh + 32 * h));
          store(_mm256_or_si256(_mm256_and_si256(ql0, m4y),
                                _mm256_and_si256(_mm256_slli_epi16(qh, 4), hmask)),
                128 * h);
          store(_mm256_or_si256(_mm256_and_si256(ql1, m4y),
                                _mm256_and_si256(_mm256_slli_epi16(qh, 2), hmask)),
                128 * h + 32);
          store(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4y),
                                _mm256_and_si256(qh, hmask)),
                128 * h + 64);
          store(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4y),
                                _mm256_and_si256(_mm256_srli_epi16(qh, 2), hmask)),
                128 * h + 96);
        }
        const float d = HalfToFloat(blk.d);
        for (int j = 0; j < 8; ++j) a[8 * i + j] = d;
      }
      return;
    }
    default:
      CLEAVE_CHECK(false, "no x86 kernel for {}", DTypeName(dtype));
  }
}

// sum_g b[g] * s16[g] over `n` groups (a multiple of 8; both arrays hold at least n floats).
inline float BiasDot(const float* b, const float* s16, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t g = 0; g < n; g += 8) {
    acc = _mm256_fmadd_ps(_mm256_load_ps(b + g), _mm256_loadu_ps(s16 + g), acc);
  }
  return HSum(acc);
}

// The two int16 halves (elements 0..15, 16..31) of block j of an unpacked row.
template <Codes C>
inline void LoadCodes(const uint8_t* q, int64_t j, __m256i& w0, __m256i& w1) {
  if constexpr (C == Codes::kS16) {
    w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(q + 64 * j));
    w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(q + 64 * j + 32));
  } else {
    const __m128i v0 = _mm_load_si128(reinterpret_cast<const __m128i*>(q + 32 * j));
    const __m128i v1 = _mm_load_si128(reinterpret_cast<const __m128i*>(q + 32 * j + 16));
    w0 = C == Codes::kS8 ? _mm256_cvtepi8_epi16(v0) : _mm256_cvtepu8_epi16(v0);
    w1 = C == Codes::kS8 ? _mm256_cvtepi8_epi16(v1) : _mm256_cvtepu8_epi16(v1);
  }
}

// R unpacked rows x T tokens starting at t0; writes y.
template <typename Ops, Codes C, int R, int T>
void QuantTile(RowScratch& s, const QuantizedActivations& x, int64_t t0, int64_t r0,
               int64_t rows_total, float* y) {
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  const int16_t* xq[T];
  const float* xd[T];
  for (int t = 0; t < T; ++t) {
    xq[t] = x.token_qs(t0 + t);
    xd[t] = x.token_d(t0 + t);
  }
  const uint8_t* wq[R];
  const float* wa[R];
  for (int r = 0; r < R; ++r) {
    wq[r] = s.q(r);
    wa[r] = s.a(r);
  }
  for (int64_t j = 0; j < x.num_blocks; ++j) {
    __m256 xdv[T];
    for (int t = 0; t < T; ++t) xdv[t] = _mm256_broadcast_ss(xd[t] + j);
    for (int r = 0; r < R; ++r) {
      __m256i w0, w1;
      LoadCodes<C>(wq[r], j, w0, w1);
      const __m256 av = _mm256_broadcast_ss(wa[r] + j);
      for (int t = 0; t < T; ++t) {
        const __m256i* xv = reinterpret_cast<const __m256i*>(xq[t] + 32 * j);
        const __m256 dot =
            _mm256_cvtepi32_ps(Ops::Dot(w0, w1, _mm256_load_si256(xv), _mm256_load_si256(xv + 1)));
        acc[r][t] = _mm256_fmadd_ps(dot, _mm256_mul_ps(av, xdv[t]), acc[r][t]);
      }
    }
  }
  const int64_t num_groups = x.block_stride * 2;
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      float sum = HSum(acc[r][t]);
      if constexpr (C == Codes::kU8) sum += BiasDot(s.b(r), x.token_s16(t0 + t), num_groups);
      y[(t0 + t) * rows_total + r0 + r] = sum;
    }
  }
}

template <typename Ops, Codes C, int R, int kMaxT>
void QuantRowsAllTokens(RowScratch& s, const QuantizedActivations& x, int64_t r0,
                        int64_t rows_total, float* y) {
  int64_t t0 = 0;
  for (; t0 + kMaxT <= x.num_tokens; t0 += kMaxT) {
    QuantTile<Ops, C, R, kMaxT>(s, x, t0, r0, rows_total, y);
  }
  switch (x.num_tokens - t0) {
    case 0:
      break;
    case 1:
      QuantTile<Ops, C, R, 1>(s, x, t0, r0, rows_total, y);
      break;
    case 2:
      if constexpr (kMaxT > 2) QuantTile<Ops, C, R, 2>(s, x, t0, r0, rows_total, y);
      break;
    case 3:
      if constexpr (kMaxT > 3) QuantTile<Ops, C, R, 3>(s, x, t0, r0, rows_total, y);
      break;
    default:
      CLEAVE_CHECK(false, "token tile larger than 4");
  }
}

template <typename Ops, Codes C, int R, int kMaxT>
void QuantRows(RowScratch& s, const QuantizedActivations& x, int64_t r0, int nr, int64_t rows_total,
               float* y) {
  if constexpr (R > 1) {
    if (nr < R) return QuantRows<Ops, C, R - 1, kMaxT>(s, x, r0, nr, rows_total, y);
  }
  QuantRowsAllTokens<Ops, C, R, kMaxT>(s, x, r0, rows_total, y);
}

template <typename Ops, Codes C, int kMaxR, int kMaxT>
void QuantizedRowsX86(const WeightView& w, const QuantizedActivations& x, int64_t row_begin,
                      int64_t row_end, float* y) {
  thread_local RowScratch scratch;
  scratch.Reserve(kMaxR, w.cols);
  const int64_t row_bytes = static_cast<int64_t>(*RowBytes(w.dtype, w.cols));
  const auto* data = static_cast<const uint8_t*>(w.data);
  if constexpr (C == Codes::kU8) {
    // BiasDot reads b up to the padded group count; the padding must be 0.
    for (int r = 0; r < kMaxR; ++r) {
      std::fill(scratch.b(r), scratch.b(r) + scratch.b_stride(), 0.0f);
    }
  }
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kMaxR) {
    const int nr = static_cast<int>(std::min<int64_t>(kMaxR, row_end - r0));
    for (int r = 0; r < nr; ++r) {
      UnpackRowX86(w.dtype, data + (r0 + r) * row_bytes, w.cols, scratch.q(r), scratch.a(r),
                   scratch.b(r));
    }
    QuantRows<Ops, C, kMaxR, kMaxT>(scratch, x, r0, nr, w.rows, y);
  }
}

template <typename Ops, int kMaxR, int kMaxT>
void QuantizedX86(const WeightView& w, const QuantizedActivations& x, int64_t row_begin,
                  int64_t row_end, float* y) {
  static_assert(kMaxT <= 4);
  switch (CodesOf(w.dtype)) {
    case Codes::kU8:
      return QuantizedRowsX86<Ops, Codes::kU8, kMaxR, kMaxT>(w, x, row_begin, row_end, y);
    case Codes::kS8:
      return QuantizedRowsX86<Ops, Codes::kS8, kMaxR, kMaxT>(w, x, row_begin, row_end, y);
    case Codes::kS16:
      return QuantizedRowsX86<Ops, Codes::kS16, kMaxR, kMaxT>(w, x, row_begin, row_end, y);
  }
}

// ---- F32 / F16 / BF16 ----

// Converts one row to F32 (F32 rows are used in place).
inline const float* RowAsFloat(DType dtype, const uint8_t* row, int64_t cols, float* buf) {
  if (dtype == DType::kF32) return reinterpret_cast<const float*>(row);
  const auto* h = reinterpret_cast<const uint16_t*>(row);
  int64_t c = 0;
  if (dtype == DType::kF16) {
    for (; c + 8 <= cols; c += 8) {
      _mm256_store_ps(buf + c,
                      _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + c))));
    }
    for (; c < cols; ++c) buf[c] = HalfToFloat(h[c]);
  } else {
    for (; c + 8 <= cols; c += 8) {
      const __m256i v =
          _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + c)));
      _mm256_store_ps(buf + c, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
    for (; c < cols; ++c) buf[c] = Bf16ToFp32(h[c]);
  }
  return buf;
}

template <int R, int T>
void FloatTile(const float* const* wrow, const float* x, int64_t cols, int64_t t0, int64_t r0,
               int64_t rows_total, float* y) {
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) {
    __m256 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = _mm256_loadu_ps(wrow[r] + c);
    for (int t = 0; t < T; ++t) {
      const __m256 xv = _mm256_loadu_ps(x + (t0 + t) * cols + c);
      for (int r = 0; r < R; ++r) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      float sum = HSum(acc[r][t]);
      for (int64_t k = c; k < cols; ++k) sum += wrow[r][k] * x[(t0 + t) * cols + k];
      y[(t0 + t) * rows_total + r0 + r] = sum;
    }
  }
}

template <int R, int kMaxT>
void FloatRows(const float* const* wrow, const float* x, int64_t num_tokens, int64_t cols,
               int64_t r0, int nr, int64_t rows_total, float* y) {
  if constexpr (R > 1) {
    if (nr < R) return FloatRows<R - 1, kMaxT>(wrow, x, num_tokens, cols, r0, nr, rows_total, y);
  }
  int64_t t0 = 0;
  for (; t0 + kMaxT <= num_tokens; t0 += kMaxT) {
    FloatTile<R, kMaxT>(wrow, x, cols, t0, r0, rows_total, y);
  }
  for (; t0 < num_tokens; ++t0) FloatTile<R, 1>(wrow, x, cols, t0, r0, rows_total, y);
}

template <int kMaxR, int kMaxT>
void FloatX86(const WeightView& w, const float* x, int64_t num_tokens, int64_t row_begin,
              int64_t row_end, float* y) {
  thread_local RowScratch scratch;
  scratch.Reserve(kMaxR, w.cols);
  const int64_t row_bytes = static_cast<int64_t>(*RowBytes(w.dtype, w.cols));
  const auto* data = static_cast<const uint8_t*>(w.data);
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kMaxR) {
    const int nr = static_cast<int>(std::min<int64_t>(kMaxR, row_end - r0));
    const float* wrow[kMaxR];
    for (int r = 0; r < nr; ++r) {
      wrow[r] = RowAsFloat(w.dtype, data + (r0 + r) * row_bytes, w.cols, scratch.f(r));
    }
    FloatRows<kMaxR, kMaxT>(wrow, x, num_tokens, w.cols, r0, nr, w.rows, y);
  }
}

}  // namespace
}  // namespace cleave::kernels::cpu
