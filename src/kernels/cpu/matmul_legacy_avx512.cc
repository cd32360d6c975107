// AVX-512 VNNI MatMul for the legacy block formats Q4_0, Q4_1 and Q8_0 (the formats of the
// default model and of common Q4_0/Q8_0 files), reading GGUF blocks in place with 512-bit
// vectors and an int16 activation layout arranged to match them (activations quantized as in
// matmul_kernels.h: int16 per block of 32, d = amax / 32767).
//
// Q4_0 / Q4_1: a group is 4 weight blocks (128 elements). Their 4 x 16 nibble bytes load into
// one zmm v, 128-bit lane k = block k (a broadcast plus three merge-masked broadcasts: load-port
// work, no shuffles). Viewed as 16-bit lanes, lane j of block k holds bytes 2j and 2j+1, so
// shifts and masks alone give four int16 code registers with no byte unpacking:
//
//   w[0] = v & 15           element 2j        (low nibble of byte 2j)
//   w[1] = (v >> 4) & 15    element 2j + 16   (high nibble of byte 2j)
//   w[2] = (v >> 8) & 15    element 2j + 1    (low nibble of byte 2j + 1)
//   w[3] = v >> 12          element 2j + 17   (high nibble of byte 2j + 1)
//
// Activations are stored in that order, so four vpdpwssd give int32 lanes 4k..4k+3 = partial
// dots of block k:
//
//   XQ4Group<kQ4_0> (384 bytes, per token per 4 blocks)
//   +--------------------------------------+-----------+---------------------+
//   | int16 x[4][32]                        | f32 dx[16]| i32 bias8[16]       |  Q4_0
//   | x[p][8k + j] = block k element E(p,j) | d_k x4    | -8 * sum_k          |
//   +--------------------------------------+-----------+---------------------+
//   |                 (same)                | (same)    | f32 s[16] dx * sum_k|  Q4_1
//   +--------------------------------------+-----------+---------------------+
//   E(p, j) = 2j + (p & 2 ? 1 : 0) + (p & 1 ? 16 : 0)
//   (bias8 and s hold block k's sum in lane 4k and 0 in lanes 4k+1..4k+3)
//
// The f16 scales (and Q4_1 mins) of the 4 blocks all lie in the group's first 64 bytes; one
// vpermw spreads each to 4 lanes and vcvtph2ps makes them floats. Q4_0's "- 8" enters the
// dot as its starting value bias8; Q4_1's min m multiplies s, the float block sums.
//
// Q8_0: a group is 2 blocks (64 elements). w[0] = vpmovsxbw of (block 0 bytes 0..15, block 1
// bytes 0..15), w[1] the same for bytes 16..31, so int32 lanes 0..7 belong to block 0 and
// 8..15 to block 1:
//
//   XQ8Group (320 bytes): | int16 x[2][32]: x[h][16k + i] = block k element 16h + i |
//                         | f32 dx[16] (d_k x8) |
//
// Overflow: |x| <= 32767, |w| <= 128 and 8 products per int32 lane: < 2^25.
//
// Tiling. Decode (1-2 tokens): 4 rows at a time stream through their groups once; each group
// is expanded in registers and used for every token, with the 4 rows' independent dot chains
// interleaved and a row tile ~8 KB further on prefetched. Everything is fully unrolled and
// force-inlined so the compiler keeps codes, scales and accumulators in registers. Batched (3+
// tokens): 4 rows are first expanded into L1 scratch, then every tile of 3 tokens runs over them:
// per group the 12 integer dots first (each code and activation register loaded once, 12 int32
// accumulators), then 12 float accumulators.
//
// Batch invariance: both paths use the same layouts, the same integer partial sums per lane and
// the same float operations in the same order (DotGroup, then Store), so a token's outputs are
// bit-identical whether it runs alone (decode) or in a batch (the forward tests check this).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/status.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/quant_formats.h"

// GCC 12's AVX-512 intrinsics (_mm512_cvtepi32_ps, extracts) start from _mm512_undefined_*(),
// which it then reports as used uninitialized; those warnings are false positives.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// The tile bodies must be inlined into one function for their __m512 arrays to become
// registers; GCC's heuristics give up on them at this size.
#define CLEAVE_ALWAYS_INLINE inline __attribute__((always_inline))

namespace cleave::kernels::cpu {
namespace {

enum class Fmt { kQ4_0, kQ4_1, kQ8_0 };

// Q4_0 groups carry bias8 (the "- 8" as a dot's starting value), Q4_1 groups s (the block sums
// its mins multiply).
template <Fmt F>
struct alignas(64) XQ4Group {
  int16_t x[4][32];
  float dx[16];
  int32_t bias8[16];
};
template <>
struct alignas(64) XQ4Group<Fmt::kQ4_1> {
  int16_t x[4][32];
  float dx[16];
  float s[16];
};
struct alignas(64) XQ8Group {
  int16_t x[2][32];
  float dx[16];
};

// A row's group expanded into scratch for the batched path: Codes<F> in memory.
struct alignas(64) WGroup {
  __m512i w[4];  // Q8_0 uses w[0], w[1]
  __m512 scale;
  __m512 min;  // Q4_1 only
};

template <Fmt F>
struct Traits;
template <>
struct Traits<Fmt::kQ4_0> {
  static constexpr int kBlockBytes = 18, kQsOffset = 2, kBlocks = 4, kCodeRegs = 4;
  using XGroup = XQ4Group<Fmt::kQ4_0>;
};
template <>
struct Traits<Fmt::kQ4_1> {
  static constexpr int kBlockBytes = 20, kQsOffset = 4, kBlocks = 4, kCodeRegs = 4;
  using XGroup = XQ4Group<Fmt::kQ4_1>;
};
template <>
struct Traits<Fmt::kQ8_0> {
  static constexpr int kBlockBytes = 34, kQsOffset = 2, kBlocks = 2, kCodeRegs = 2;
  using XGroup = XQ8Group;
};

// vpermw indices: lane i of 16 takes the f16 at byte kBlockBytes * (i / kLanesPerBlock) +
// kOffset of the group's first 64 bytes (the scale or min of the block that lane belongs to).
template <int kBlockBytes, int kLanesPerBlock, int kOffset>
struct ScaleIndex {
  static constexpr std::array<int16_t, 32> Make() {
    std::array<int16_t, 32> idx{};
    for (int i = 0; i < 16; ++i) {
      idx[i] = static_cast<int16_t>((kBlockBytes * (i / kLanesPerBlock) + kOffset) / 2);
    }
    return idx;
  }
  alignas(64) static constexpr std::array<int16_t, 32> kIdx = Make();
  static __m512i Load() { return _mm512_load_si512(kIdx.data()); }
};

// One group's codes and scales in registers.
template <Fmt F>
struct Codes {
  __m512i w[Traits<F>::kCodeRegs];
  __m512 scale;
  __m512 min;  // Q4_1 only
};

inline __m128i Load128(const uint8_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}

// Splits 4 blocks of nibble bytes (128-bit lane k = block k) into the four code registers.
CLEAVE_ALWAYS_INLINE void SplitNibbles(__m512i v, __m512i* w) {
  const __m512i m4 = _mm512_set1_epi16(0x0f);
  w[0] = _mm512_and_si512(v, m4);
  w[1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
  w[2] = _mm512_and_si512(_mm512_srli_epi16(v, 8), m4);
  w[3] = _mm512_srli_epi16(v, 12);
}

// Expands the group at p; valid_blocks < kBlocks only for a row's last group, whose missing
// blocks are neither read nor used (their codes and scales come out 0).
template <Fmt F, bool kFull>
CLEAVE_ALWAYS_INLINE void LoadCodes(const uint8_t* p, int valid_blocks, Codes<F>& c) {
  using T = Traits<F>;
  __m512i head;
  if constexpr (kFull) {
    head = _mm512_loadu_si512(p);  // a full group is >= 64 bytes
  } else {
    const int span = T::kBlockBytes * valid_blocks;
    const __mmask64 head_mask = span >= 64 ? ~__mmask64{0} : ((__mmask64{1} << span) - 1);
    head = _mm512_maskz_loadu_epi8(head_mask, p);
  }
  const auto qs = [&](int k, int offset) {
    return Load128(p + T::kBlockBytes * k + T::kQsOffset + offset);
  };
  if constexpr (F == Fmt::kQ8_0) {
    c.scale = _mm512_cvtph_ps(
        _mm512_castsi512_si256(_mm512_permutexvar_epi16(ScaleIndex<34, 8, 0>::Load(), head)));
    for (int h = 0; h < 2; ++h) {
      __m256i v = _mm256_broadcastsi128_si256(qs(0, 16 * h));
      if (kFull || valid_blocks > 1) {
        v = _mm256_mask_broadcast_i32x4(v, 0xf0, qs(1, 16 * h));
      } else {
        v = _mm256_maskz_mov_epi32(0x0f, v);
      }
      c.w[h] = _mm512_cvtepi8_epi16(v);
    }
  } else {
    c.scale = _mm512_cvtph_ps(_mm512_castsi512_si256(
        _mm512_permutexvar_epi16(ScaleIndex<T::kBlockBytes, 4, 0>::Load(), head)));
    if constexpr (F == Fmt::kQ4_1) {
      c.min = _mm512_cvtph_ps(_mm512_castsi512_si256(
          _mm512_permutexvar_epi16(ScaleIndex<T::kBlockBytes, 4, 2>::Load(), head)));
    }
    __m512i v;
    if constexpr (kFull) {
      v = _mm512_broadcast_i32x4(qs(0, 0));
      v = _mm512_mask_broadcast_i32x4(v, 0x00f0, qs(1, 0));
      v = _mm512_mask_broadcast_i32x4(v, 0x0f00, qs(2, 0));
      v = _mm512_mask_broadcast_i32x4(v, 0xf000, qs(3, 0));
    } else {
      v = _mm512_setzero_si512();
      if (valid_blocks > 0) v = _mm512_mask_broadcast_i32x4(v, 0x000f, qs(0, 0));
      if (valid_blocks > 1) v = _mm512_mask_broadcast_i32x4(v, 0x00f0, qs(1, 0));
      if (valid_blocks > 2) v = _mm512_mask_broadcast_i32x4(v, 0x0f00, qs(2, 0));
    }
    SplitNibbles(v, c.w);
  }
}

// Q4_0's bias8 (other formats have none; never called for them).
template <typename XGroup>
CLEAVE_ALWAYS_INLINE const void* BiasOf(const XGroup& x) {
  if constexpr (requires { x.bias8; }) {
    return x.bias8;
  } else {
    return nullptr;
  }
}

// acc += the float value of a group's integer dot i: every path ends a group with exactly these
// operations, which is what makes outputs independent of the batch (see the top).
template <Fmt F, typename C>
CLEAVE_ALWAYS_INLINE __m512 FinishGroup(const C& c, const typename Traits<F>::XGroup& x, __m512i i,
                                        __m512 acc) {
  acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(c.scale, _mm512_load_ps(x.dx)), acc);
  if constexpr (F == Fmt::kQ4_1) acc = _mm512_fmadd_ps(c.min, _mm512_load_ps(x.s), acc);
  return acc;
}

// acc += this group's dot with one token's group x; C is Codes<F> (registers) or WGroup
// (scratch).
template <Fmt F, typename C>
CLEAVE_ALWAYS_INLINE __m512 DotGroup(const C& c, const typename Traits<F>::XGroup& x, __m512 acc) {
  const auto xv = [&](int p) { return _mm512_load_si512(x.x[p]); };
  if constexpr (F == Fmt::kQ8_0) {
    __m512i i = _mm512_madd_epi16(c.w[0], xv(0));
    i = _mm512_dpwssd_epi32(i, c.w[1], xv(1));
    return FinishGroup<F>(c, x, i, acc);
  } else {
    // Two chains of two halve the vpdpwssd latency on the critical path.
    __m512i i0, i1;
    if constexpr (F == Fmt::kQ4_0) {
      i0 = _mm512_dpwssd_epi32(_mm512_load_si512(x.bias8), c.w[0], xv(0));
    } else {
      i0 = _mm512_madd_epi16(c.w[0], xv(0));
    }
    i1 = _mm512_madd_epi16(c.w[2], xv(2));
    i0 = _mm512_dpwssd_epi32(i0, c.w[1], xv(1));
    i1 = _mm512_dpwssd_epi32(i1, c.w[3], xv(3));
    return FinishGroup<F>(c, x, _mm512_add_epi32(i0, i1), acc);
  }
}

// Horizontal sum (GCC 12's _mm512_reduce_add_ps trips -Wuninitialized).
CLEAVE_ALWAYS_INLINE float HSum512(__m512 v) {
  const __m256 h =
      _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_maskz_extractf32x8_ps(0xff, v, 1));
  // (s0 + s1) + (s2 + s3), the association HSum512x4 uses, so a row's result does not depend
  // on which of the two reduced it.
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

// Sums of 4 vectors: lane i of the result = sum of a[i]'s 16 lanes, for i < 4.
CLEAVE_ALWAYS_INLINE __m128 HSum512x4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
  // Pairwise-fold halves, interleaving two vectors per step so each add does double duty.
  const auto fold256 = [](__m512 v) {
    return _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_maskz_extractf32x8_ps(0xff, v, 1));
  };
  const __m256 h0 = fold256(a0), h1 = fold256(a1), h2 = fold256(a2), h3 = fold256(a3);
  // [h0 lo | h1 lo] + [h0 hi | h1 hi] -> 4 partial sums of h0 then 4 of h1.
  const __m256 p01 =
      _mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20), _mm256_permute2f128_ps(h0, h1, 0x31));
  const __m256 p23 =
      _mm256_add_ps(_mm256_permute2f128_ps(h2, h3, 0x20), _mm256_permute2f128_ps(h2, h3, 0x31));
  // hadd: (p01[0]+p01[1], p01[2]+p01[3], p23[0]+p23[1], p23[2]+p23[3] | same for high lanes)
  const __m256 q = _mm256_hadd_ps(p01, p23);
  const __m256 r = _mm256_hadd_ps(q, q);  // lane: (a0, a2, a0, a2 | a1, a3, a1, a3)
  const __m128 lo = _mm256_castps256_ps128(r), hi = _mm256_extractf128_ps(r, 1);
  return _mm_unpacklo_ps(lo, hi);  // (a0, a1, a2, a3)
}

// Per-token quantized activations, XGroup = a format's decode or batched group layout.
template <typename XGroup>
struct Activations {
  std::vector<XGroup> groups;  // [num_tokens][num_groups]
  int64_t num_groups = 0;
  const XGroup* token(int64_t t) const { return groups.data() + t * num_groups; }
};

// Rearranges one token's quantized blocks (QuantizeRowFn output) into F's decode groups.
template <Fmt F>
void ArrangeToken(const int16_t* qs, const float* d, int64_t num_blocks,
                  typename Traits<F>::XGroup* out) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const int16_t* q = qs + 32 * b;
    auto& g = out[b / Traits<F>::kBlocks];
    const int k = static_cast<int>(b % Traits<F>::kBlocks);
    if constexpr (F == Fmt::kQ8_0) {
      std::memcpy(g.x[0] + 16 * k, q, 32);
      std::memcpy(g.x[1] + 16 * k, q + 16, 32);
      for (int l = 0; l < 8; ++l) g.dx[8 * k + l] = d[b];
    } else {
      int32_t sum = 0;
      for (int i = 0; i < 32; ++i) sum += q[i];
      for (int p = 0; p < 4; ++p) {
        const int base = (p & 2 ? 1 : 0) + (p & 1 ? 16 : 0);  // E(p, j) - 2j, see the top
        for (int j = 0; j < 8; ++j) g.x[p][8 * k + j] = q[2 * j + base];
      }
      for (int l = 0; l < 4; ++l) {
        g.dx[4 * k + l] = d[b];
        if constexpr (F == Fmt::kQ4_0) {
          g.bias8[4 * k + l] = l == 0 ? -8 * sum : 0;
        } else {
          g.s[4 * k + l] = l == 0 ? d[b] * static_cast<float>(sum) : 0.0f;
        }
      }
    }
  }
}

template <int R, int T>
CLEAVE_ALWAYS_INLINE void Store(__m512 (&acc)[R][T], int64_t r0, int64_t t0, int64_t rows_total,
                                float* y) {
  for (int t = 0; t < T; ++t) {
    float* out = y + (t0 + t) * rows_total + r0;
    if constexpr (R == 4) {
      _mm_storeu_ps(out, HSum512x4(acc[0][t], acc[1][t], acc[2][t], acc[3][t]));
    } else {
      for (int r = 0; r < R; ++r) out[r] = HSum512(acc[r][t]);
    }
  }
}

// Prefetches the lines of the group at p + ahead (a group spans two or three lines; touching
// its first and last byte covers them all as the loop advances).
template <Fmt F>
CLEAVE_ALWAYS_INLINE void PrefetchGroup(const uint8_t* p, int64_t ahead) {
  constexpr int kGroupBytes = Traits<F>::kBlockBytes * Traits<F>::kBlocks;
  _mm_prefetch(reinterpret_cast<const char*>(p + ahead), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(p + ahead + kGroupBytes - 1), _MM_HINT_T0);
}

// Rows [r0, r0 + R) x tokens [t0, t0 + T) for the decode path: each group of the R rows is
// expanded in registers and dotted with every token; writes y. While it reads a group it
// prefetches the group `prefetch_ahead` bytes further on (the same group of a later row tile:
// rows are short, 300 bytes to a few KB, so "a few groups ahead in this row" would mostly
// point into rows already being read).
template <Fmt F, int R, int T>
void TileDirect(const uint8_t* const* rows, const Activations<typename Traits<F>::XGroup>& xa,
                int64_t num_blocks, int64_t prefetch_ahead, int64_t t0, int64_t r0,
                int64_t rows_total, float* y) {
  using XGroup = typename Traits<F>::XGroup;
  constexpr int kB = Traits<F>::kBlocks;
  constexpr int kGroupBytes = Traits<F>::kBlockBytes * kB;
  const uint8_t* row[R];
  for (int r = 0; r < R; ++r) row[r] = rows[r];
  const XGroup* x[T];
  for (int t = 0; t < T; ++t) x[t] = xa.token(t0 + t);
  __m512 acc[R][T];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  const int64_t full = num_blocks / kB;
  for (int64_t g = 0; g < full; ++g) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const uint8_t* p = row[r] + g * kGroupBytes;
      PrefetchGroup<F>(p, prefetch_ahead);
      Codes<F> c;
      LoadCodes<F, true>(p, kB, c);
#pragma GCC unroll 2
      for (int t = 0; t < T; ++t) acc[r][t] = DotGroup<F>(c, x[t][g], acc[r][t]);
    }
  }
  if (full < xa.num_groups) {
    const int valid = static_cast<int>(num_blocks - full * kB);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const uint8_t* p = row[r] + full * kGroupBytes;
      PrefetchGroup<F>(p, prefetch_ahead);
      Codes<F> c;
      LoadCodes<F, false>(p, valid, c);
#pragma GCC unroll 2
      for (int t = 0; t < T; ++t) acc[r][t] = DotGroup<F>(c, x[t][full], acc[r][t]);
    }
  }
  Store<R, T>(acc, r0, t0, rows_total, y);
}

// Expands a row's groups into scratch[num_groups].
template <Fmt F>
void ExpandRow(const uint8_t* row, int64_t num_blocks, int64_t num_groups, WGroup* scratch) {
  constexpr int kB = Traits<F>::kBlocks;
  constexpr int kGroupBytes = Traits<F>::kBlockBytes * kB;
  const int64_t full = num_blocks / kB;
  for (int64_t g = 0; g < num_groups; ++g) {
    Codes<F> c;
    if (g < full) {
      LoadCodes<F, true>(row + g * kGroupBytes, kB, c);
    } else {
      LoadCodes<F, false>(row + g * kGroupBytes, static_cast<int>(num_blocks - g * kB), c);
    }
    WGroup& out = scratch[g];
    for (int p = 0; p < Traits<F>::kCodeRegs; ++p) out.w[p] = c.w[p];
    out.scale = c.scale;
    if constexpr (F == Fmt::kQ4_1) out.min = c.min;
  }
}

// The batched tile: R expanded rows (scratch [R][num_groups]) x T tokens from t0.
template <Fmt F, int R, int T>
void TileExpanded(const WGroup* scratch, const Activations<typename Traits<F>::XGroup>& xa,
                  int64_t t0, int64_t r0, int64_t rows_total, float* y) {
  using XGroup = typename Traits<F>::XGroup;
  const int64_t num_groups = xa.num_groups;
  const XGroup* x[T];
  for (int t = 0; t < T; ++t) x[t] = xa.token(t0 + t);
  __m512 acc[R][T];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  constexpr int kRegs = Traits<F>::kCodeRegs;
  for (int64_t g = 0; g < num_groups; ++g) {
    // Integer dots for all R x T pairs first, one code register p at a time: each weight and
    // activation register is loaded once per group and used T or R times (instead of loading
    // the activations once per row). The integer sums are exact, so this equals DotGroup.
    __m512i dot[R][T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const __m512i init =
          F == Fmt::kQ4_0 ? _mm512_load_si512(BiasOf(x[t][g])) : _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) dot[r][t] = init;
    }
#pragma GCC unroll 4
    for (int p = 0; p < kRegs; ++p) {
      __m512i wv[R];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) wv[r] = _mm512_load_si512(&scratch[r * num_groups + g].w[p]);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const __m512i xv = _mm512_load_si512(x[t][g].x[p]);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) dot[r][t] = _mm512_dpwssd_epi32(dot[r][t], wv[r], xv);
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const WGroup& w = scratch[r * num_groups + g];
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        acc[r][t] = FinishGroup<F>(w, x[t][g], dot[r][t], acc[r][t]);
      }
    }
  }
  Store<R, T>(acc, r0, t0, rows_total, y);
}

constexpr int kRowTile = 4;
// How far ahead the decode path prefetches: enough bytes in flight to cover memory latency at
// one core's bandwidth (~250 ns x 30 GB/s). One row tile ahead, as before, was only 1.4 KB for
// SmolLM2's 576-column Q4_1 rows, and those matrices streamed at ~18 GB/s instead of ~27
// (matmul_bench decode, 1 thread); 12 KB and more was no better and sometimes worse.
constexpr int64_t kPrefetchBytes = 8192;
constexpr int kTokenTile = 3;

template <Fmt F, int R>
void RowsExpanded(const WGroup* scratch, const Activations<typename Traits<F>::XGroup>& xa,
                  int64_t num_tokens, int64_t r0, int64_t rows_total, float* y) {
  int64_t t0 = 0;
  for (; t0 + kTokenTile <= num_tokens; t0 += kTokenTile) {
    TileExpanded<F, R, kTokenTile>(scratch, xa, t0, r0, rows_total, y);
  }
  for (; t0 < num_tokens; ++t0) TileExpanded<F, R, 1>(scratch, xa, t0, r0, rows_total, y);
}

template <Fmt F>
void DecodeRows(const WeightView& w, const Activations<typename Traits<F>::XGroup>& xa,
                int64_t num_tokens, int64_t row_begin, int64_t row_end, float* y) {
  const int64_t num_blocks = w.cols / 32;
  const int64_t row_bytes = num_blocks * Traits<F>::kBlockBytes;
  // A whole number of row tiles (so it is the same group of a later tile), at least
  // kPrefetchBytes.
  const int64_t tile_bytes = kRowTile * row_bytes;
  const int64_t ahead =
      tile_bytes * std::max<int64_t>(1, (kPrefetchBytes + tile_bytes - 1) / tile_bytes);
  const auto* data = static_cast<const uint8_t*>(w.data);
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kRowTile) {
    const int nr = static_cast<int>(std::min<int64_t>(kRowTile, row_end - r0));
    const uint8_t* rows[kRowTile];
    for (int r = 0; r < nr; ++r) rows[r] = data + (r0 + r) * row_bytes;
    const auto run = [&]<int R>() {
      int64_t t0 = 0;
      for (; t0 + 2 <= num_tokens; t0 += 2) {
        TileDirect<F, R, 2>(rows, xa, num_blocks, ahead, t0, r0, w.rows, y);
      }
      if (t0 < num_tokens) TileDirect<F, R, 1>(rows, xa, num_blocks, ahead, t0, r0, w.rows, y);
    };
    switch (nr) {
      case 4:
        run.template operator()<4>();
        break;
      case 3:
        run.template operator()<3>();
        break;
      case 2:
        run.template operator()<2>();
        break;
      default:
        run.template operator()<1>();
        break;
    }
  }
}

template <Fmt F>
void BatchedRows(const WeightView& w, const Activations<typename Traits<F>::XGroup>& xa,
                 int64_t num_tokens, int64_t row_begin, int64_t row_end, float* y) {
  const int64_t num_blocks = w.cols / 32;
  const int64_t row_bytes = num_blocks * Traits<F>::kBlockBytes;
  const auto* data = static_cast<const uint8_t*>(w.data);
  thread_local std::vector<WGroup> scratch;
  scratch.resize(kRowTile * xa.num_groups);
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kRowTile) {
    const int nr = static_cast<int>(std::min<int64_t>(kRowTile, row_end - r0));
    for (int r = 0; r < nr; ++r) {
      ExpandRow<F>(data + (r0 + r) * row_bytes, num_blocks, xa.num_groups,
                   scratch.data() + r * xa.num_groups);
    }
    switch (nr) {
      case 4:
        RowsExpanded<F, 4>(scratch.data(), xa, num_tokens, r0, w.rows, y);
        break;
      case 3:
        RowsExpanded<F, 3>(scratch.data(), xa, num_tokens, r0, w.rows, y);
        break;
      case 2:
        RowsExpanded<F, 2>(scratch.data(), xa, num_tokens, r0, w.rows, y);
        break;
      default:
        RowsExpanded<F, 1>(scratch.data(), xa, num_tokens, r0, w.rows, y);
        break;
    }
  }
}

// Quantizes and arranges the activations (shared by every product), then runs rows_fn over the
// products' row ranges in one section. Each product's rows start at a multiple of kRowTile in
// the combined range, so the row tiles are the ones a single-product call would run.
template <Fmt F, typename RowsFn>
void RunWith(std::span<const MatMulOutput> products, const float* x, int64_t num_tokens,
             ThreadPool& pool, QuantizeRowFn quantize_row, RowsFn rows_fn) {
  using XGroup = typename Traits<F>::XGroup;
  constexpr int kGroupBlocks = Traits<F>::kBlocks;
  // Named through a plain reference: inside the lambdas a thread_local would resolve to the
  // worker thread's own (empty) instance.
  thread_local Activations<XGroup> buffer;
  Activations<XGroup>& xa = buffer;
  const int64_t cols = products[0].w.cols;
  const int64_t num_blocks = cols / 32;
  xa.num_groups = (num_blocks + kGroupBlocks - 1) / kGroupBlocks;
  xa.groups.resize(num_tokens * xa.num_groups);
  const auto arrange = [&](int64_t begin, int64_t end) {
    thread_local std::vector<int16_t> qs;
    thread_local std::vector<float> d, s16;
    qs.resize(32 * num_blocks);
    d.resize(num_blocks);
    s16.resize(2 * num_blocks);
    for (int64_t t = begin; t < end; ++t) {
      XGroup* out = xa.groups.data() + t * xa.num_groups;
      // A partial last group's missing blocks must read as zeros.
      std::memset(static_cast<void*>(out + xa.num_groups - 1), 0, sizeof(XGroup));
      quantize_row(x + t * cols, num_blocks, qs.data(), d.data(), s16.data());
      ArrangeToken<F>(qs.data(), d.data(), num_blocks, out);
    }
  };
  pool.ParallelFor(num_tokens, 1, arrange);  // inline for one token
  std::array<int64_t, kMaxSharedProducts + 1> offset{};
  for (size_t i = 0; i < products.size(); ++i) {
    offset[i + 1] = offset[i] + (products[i].w.rows + kRowTile - 1) / kRowTile * kRowTile;
  }
  pool.ParallelFor(offset[products.size()], kRowTile, [&](int64_t begin, int64_t end) {
    for (size_t i = 0; i < products.size(); ++i) {
      const int64_t lo = std::max(begin, offset[i]);
      const int64_t hi = std::min(end, offset[i] + products[i].w.rows);
      if (lo < hi) {
        rows_fn(products[i].w, xa, num_tokens, lo - offset[i], hi - offset[i], products[i].y);
      }
    }
  });
}

template <Fmt F>
void Run(std::span<const MatMulOutput> products, const float* x, int64_t num_tokens,
         ThreadPool& pool, QuantizeRowFn quantize_row) {
  if (num_tokens <= 2) {
    RunWith<F>(products, x, num_tokens, pool, quantize_row, DecodeRows<F>);
  } else {
    RunWith<F>(products, x, num_tokens, pool, quantize_row, BatchedRows<F>);
  }
}

}  // namespace

bool LegacyHandlesAvx512(DType dtype) {
  return dtype == DType::kQ4_0 || dtype == DType::kQ4_1 || dtype == DType::kQ8_0;
}

void LegacyMatMulAvx512(std::span<const MatMulOutput> products, const float* x, int64_t num_tokens,
                        ThreadPool& pool) {
  CLEAVE_CHECK(!products.empty() && products.size() <= kMaxSharedProducts);
  const DType dtype = products[0].w.dtype;
  for (const MatMulOutput& p : products) {
    CLEAVE_CHECK(p.w.dtype == dtype && p.w.cols == products[0].w.cols,
                 "LegacyMatMulAvx512: products must share one type and cols");
  }
  const QuantizeRowFn quantize_row = Avx512MatMulKernels().quantize != nullptr
                                         ? Avx512MatMulKernels().quantize
                                         : QuantizeActivationRowScalar;
  switch (dtype) {
    case DType::kQ4_0:
      return Run<Fmt::kQ4_0>(products, x, num_tokens, pool, quantize_row);
    case DType::kQ4_1:
      return Run<Fmt::kQ4_1>(products, x, num_tokens, pool, quantize_row);
    case DType::kQ8_0:
      return Run<Fmt::kQ8_0>(products, x, num_tokens, pool, quantize_row);
    default:
      CLEAVE_CHECK(false, "LegacyMatMulAvx512: unsupported type {}", DTypeName(dtype));
  }
}

}  // namespace cleave::kernels::cpu
