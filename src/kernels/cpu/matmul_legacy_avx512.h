// Shared pieces of the AVX-512 VNNI legacy-format MatMul (matmul_legacy_avx512.cc: numerics,
// decode path, entry point; matmul_legacy_batched_avx512.cc: batched path). Only for files
// compiled with the AVX-512 flags; not for use outside kernels/cpu.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/cpu/matmul_kernels.h"

// The tile bodies must be inlined into one function for their __m512 arrays to become
// registers; GCC's heuristics give up on them at this size.
#define CLEAVE_ALWAYS_INLINE inline __attribute__((always_inline))

namespace cleave::kernels::cpu::legacy {

enum class Fmt { kQ4_0, kQ4_1, kQ8_0 };

// GGUF block layouts: kBlockBytes per 32 weights, the f16 scale d at byte 0 (Q4_1's min m at
// byte 2), the codes from kQsOffset. The decode path reads kGroupBlocks blocks of a row at a
// time (a group), the batched path expands them a group at a time.
template <Fmt F>
struct FmtTraits;
template <>
struct FmtTraits<Fmt::kQ4_0> {
  static constexpr int kBlockBytes = 18, kQsOffset = 2, kGroupBlocks = 4;
};
template <>
struct FmtTraits<Fmt::kQ4_1> {
  static constexpr int kBlockBytes = 20, kQsOffset = 4, kGroupBlocks = 4;
};
template <>
struct FmtTraits<Fmt::kQ8_0> {
  static constexpr int kBlockBytes = 34, kQsOffset = 2, kGroupBlocks = 2;
};

// Rows per panel: one zmm of float (or int32) lanes, the unit of the float sequence. Row ranges
// handed to threads are multiples of it.
constexpr int kPanel = 16;
// Up to this many tokens the decode path (weights read in place, token pairs over each panel)
// runs, beyond it the batched path (weights expanded into scratch). Both give the same bits.
// Measured on whole decode steps (`cleave profile --batch`): the decode path is faster up to
// ~10 tokens on both SmolLM2 and the 1B file (batch 4: 2x), the batched one from ~12 (expansion
// is then amortized).
constexpr int64_t kDecodeMaxTokens = 10;

// Per token and block: dx (the activation block scale) and sx = dx * float(sum of the block's
// int16 codes), the two float factors of the numerics (see matmul_legacy_avx512.cc).
struct TokenScales {
  std::vector<float> dx, sx;  // [num_tokens][num_blocks]
  int64_t num_blocks = 0;
  void Resize(int64_t num_tokens, int64_t blocks) {
    num_blocks = blocks;
    dx.resize(num_tokens * blocks);
    sx.resize(num_tokens * blocks);
  }
  const float* dx_of(int64_t t) const { return dx.data() + t * num_blocks; }
  const float* sx_of(int64_t t) const { return sx.data() + t * num_blocks; }
};

// Quantizes token t's row x (num_blocks * 32 values) into qs[32 * num_blocks] and fills its
// TokenScales entries.
void QuantizeToken(QuantizeRowFn quantize_row, const float* x, int64_t num_blocks, int16_t* qs,
                   TokenScales& scales, int64_t t);

inline int32_t BlockCodeSum(const int16_t* q) {
  int32_t sum = 0;
  for (int i = 0; i < 32; ++i) sum += q[i];
  return sum;
}

// One block's scale (and Q4_1 min) for the 16 rows of a panel, as floats.
struct BlockScales {
  __m512 d, m;
};

// Four rows' int32 vectors a..d -> one vector whose 128-bit lane L holds, in its 4 int32 lanes,
// the sums of lanes 4L..4L+3 of a, b, c, d.
CLEAVE_ALWAYS_INLINE __m512i ReduceQuad(__m512i a, __m512i b, __m512i c, __m512i d) {
  const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
  const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
  return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}

// out[m]'s 128-bit lane q = in[q]'s 128-bit lane m.
CLEAVE_ALWAYS_INLINE void TransposeLanes4x4(const __m512i (&in)[4], __m512i (&out)[4]) {
  const __m512i t0 = _mm512_shuffle_i32x4(in[0], in[1], 0x44);
  const __m512i t1 = _mm512_shuffle_i32x4(in[0], in[1], 0xee);
  const __m512i t2 = _mm512_shuffle_i32x4(in[2], in[3], 0x44);
  const __m512i t3 = _mm512_shuffle_i32x4(in[2], in[3], 0xee);
  out[0] = _mm512_shuffle_i32x4(t0, t2, 0x88);
  out[1] = _mm512_shuffle_i32x4(t0, t2, 0xdd);
  out[2] = _mm512_shuffle_i32x4(t1, t3, 0x88);
  out[3] = _mm512_shuffle_i32x4(t1, t3, 0xdd);
}

// Group layout of per-row int32 vectors: Q4 formats: lanes 4k..4k+3 belong to block k; Q8_0:
// lanes 0..7 to block 0, 8..15 to block 1. quads[i] = ReduceQuad of rows 4i..4i+3 ->
// s[k] = the sum of block k's lanes for the 16 rows, int32 lane r = row r.
template <Fmt F>
CLEAVE_ALWAYS_INLINE void TransposeQuads(const __m512i (&q)[4],
                                         __m512i (&s)[FmtTraits<F>::kGroupBlocks]) {
  if constexpr (F == Fmt::kQ8_0) {
    // Lanes 0,1 of each quad are block 0's halves and 2,3 block 1's.
    const __m512i v01 = _mm512_add_epi32(_mm512_shuffle_i32x4(q[0], q[1], 0x88),
                                         _mm512_shuffle_i32x4(q[0], q[1], 0xdd));
    const __m512i v23 = _mm512_add_epi32(_mm512_shuffle_i32x4(q[2], q[3], 0x88),
                                         _mm512_shuffle_i32x4(q[2], q[3], 0xdd));
    s[0] = _mm512_shuffle_i32x4(v01, v23, 0x88);
    s[1] = _mm512_shuffle_i32x4(v01, v23, 0xdd);
  } else {
    TransposeLanes4x4(q, s);
  }
}

// Four rows' group scales as int32 bits, as ReduceQuad would leave them: int32 lane
// kLanesPerBlock * k + j holds row j's f16 d_k in its low half (Q4_1: m_k in its high half),
// every other lane 0, so TransposeQuads (adding zeros) moves them into the rows-in-lanes order
// exactly. Block k's scale lies in the 128-bit lane of the group's first 64 bytes that block
// k's first int32 lane is in (bytes 18k / 20k for Q4_0 / Q4_1, 34 for Q8_0's second block), so
// one vpshufb per row (row j's indices shifted by j lanes) and an or of the four build it.
template <Fmt F, int kRow>
struct ScaleBitsIndex {
  static constexpr int kLanesPerBlock = 16 / FmtTraits<F>::kGroupBlocks;
  static constexpr std::array<int8_t, 64> Make() {
    std::array<int8_t, 64> idx{};
    for (int i = 0; i < 64; ++i) idx[i] = static_cast<int8_t>(0x80);  // zero
    for (int k = 0; k < FmtTraits<F>::kGroupBlocks; ++k) {
      const int dst = 4 * (kLanesPerBlock * k + kRow);
      const int src = FmtTraits<F>::kBlockBytes * k;
      const int bytes = F == Fmt::kQ4_1 ? 4 : 2;
      for (int j = 0; j < bytes; ++j) idx[dst + j] = static_cast<int8_t>((src + j) % 16);
    }
    return idx;
  }
  alignas(64) static constexpr std::array<int8_t, 64> kIdx = Make();
  static __m512i Load() { return _mm512_load_si512(kIdx.data()); }
};

// Row j's group head: the group's first 64 bytes; valid_blocks < kGroupBlocks only for a row's
// last group (nothing past its end is read).
template <Fmt F, bool kFull>
CLEAVE_ALWAYS_INLINE __m512i LoadHead(const uint8_t* group, int valid_blocks) {
  if constexpr (kFull) {
    return _mm512_loadu_si512(group);  // a full group is >= 64 bytes
  } else {
    const int span = FmtTraits<F>::kBlockBytes * valid_blocks;
    const __mmask64 mask = span >= 64 ? ~__mmask64{0} : ((__mmask64{1} << span) - 1);
    return _mm512_maskz_loadu_epi8(mask, group);
  }
}

// heads[j] = LoadHead of row j of the quad.
template <Fmt F>
CLEAVE_ALWAYS_INLINE __m512i QuadScaleBits(const __m512i (&heads)[4]) {
  const __m512i s0 = _mm512_shuffle_epi8(heads[0], ScaleBitsIndex<F, 0>::Load());
  const __m512i s1 = _mm512_shuffle_epi8(heads[1], ScaleBitsIndex<F, 1>::Load());
  const __m512i s2 = _mm512_shuffle_epi8(heads[2], ScaleBitsIndex<F, 2>::Load());
  const __m512i s3 = _mm512_shuffle_epi8(heads[3], ScaleBitsIndex<F, 3>::Load());
  return _mm512_or_si512(_mm512_ternarylogic_epi32(s0, s1, s2, 0xfe), s3);
}

// Transposed scale bits (TransposeQuads of QuadScaleBits) -> floats.
template <Fmt F>
CLEAVE_ALWAYS_INLINE BlockScales ScalesOf(__m512i bits) {
  BlockScales s;
  s.d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(bits));
  if constexpr (F == Fmt::kQ4_1) {
    s.m = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(bits, 16)));
  } else {
    s.m = _mm512_setzero_ps();
  }
  return s;
}

// One step of the float sequence for 16 rows and one token: the only float arithmetic either
// path does, so both give the same bits.
template <Fmt F>
CLEAVE_ALWAYS_INLINE __m512 BlockStep(__m512i isum, __m512 d, __m512 m, float dx, float sx,
                                      __m512 acc) {
  acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(d, _mm512_set1_ps(dx)), acc);
  if constexpr (F == Fmt::kQ4_1) acc = _mm512_fmadd_ps(m, _mm512_set1_ps(sx), acc);
  return acc;
}

// Runs fn(w, row_begin, row_end, y) over the products' rows in one parallel section. Each
// product's rows start at a multiple of grain (a multiple of kPanel) in the combined range,
// which is cut into a few pieces per thread whose sizes differ by at most one grain (with
// 16-row grains, ParallelFor's equal pieces plus a short last one left one thread up to a
// piece behind on SmolLM2's 576-row matrices).
template <typename Fn>
void ForEachRowRange(std::span<const MatMulOutput> products, ThreadPool& pool, int64_t grain,
                     Fn fn) {
  std::array<int64_t, kMaxSharedProducts + 1> offset{};
  for (size_t i = 0; i < products.size(); ++i) {
    offset[i + 1] = offset[i] + (products[i].w.rows + grain - 1) / grain * grain;
  }
  const int64_t units = offset[products.size()] / grain;
  const int64_t pieces = std::min<int64_t>(units, int64_t{pool.num_threads()} * 4);
  pool.ParallelFor(pieces, 1, [&](int64_t piece_begin, int64_t piece_end) {
    for (int64_t j = piece_begin; j < piece_end; ++j) {
      const int64_t begin = j * units / pieces * grain;
      const int64_t end = (j + 1) * units / pieces * grain;
      for (size_t i = 0; i < products.size(); ++i) {
        const int64_t lo = std::max(begin, offset[i]);
        const int64_t hi = std::min(end, offset[i] + products[i].w.rows);
        if (lo < hi) fn(products[i].w, lo - offset[i], hi - offset[i], products[i].y);
      }
    }
  });
}

// The batched path (matmul_legacy_batched_avx512.cc) for any number of tokens.
template <Fmt F>
void RunBatched(std::span<const MatMulOutput> products, const float* x, int64_t num_tokens,
                ThreadPool& pool, QuantizeRowFn quantize_row);

}  // namespace cleave::kernels::cpu::legacy
