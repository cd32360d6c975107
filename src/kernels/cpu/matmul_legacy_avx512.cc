// AVX-512 VNNI MatMul for the legacy block formats Q4_0, Q4_1 and Q8_0 (the formats of the
// default model and of common Q4_0/Q8_0 files), with activations quantized as in
// matmul_kernels.h (int16 per block of 32, d = amax / 32767).
//
// Numerics. For every row r and token t, with isum[k] = the exact int32 dot of block k (all 32
// products; Q4_0's codes taken as q - 8, Q4_1's and Q8_0's as stored), dw/m the weight block's
// scale/min, dx the activation block's scale and sx = dx * float(sum of its 32 int16 codes):
//
//   y = 0
//   for k = 0 .. num_blocks - 1, in order:
//     y = fma(float(isum[k]), dw[r, k] * dx[t, k], y)
//     y = fma(m[r, k], sx[t, k], y)                      (Q4_1 only)
//
// One float accumulator per (row, token), blocks strictly in order. Any integer method gives the
// same isum, so the two paths below only share this float sequence, and a token's outputs are
// bit-identical whether it runs alone (decode) or in a batch, on any number of threads
// (MatMulTest.BatchedOutputsEqualSingleToken; continuous batching relies on it). The float
// sequence runs with 16 rows in the lanes of one zmm ("rows in lanes"); a row's result never
// depends on its neighbours, so partial panels are padded with copies of a valid row and
// stored masked.
//
// Decode path (up to kDecodeMaxTokens = 10 tokens, this file, in token pairs over each panel):
// weights are read in place, a panel of 16 rows at a time, one group of blocks per row as
// below, 4 rows (a quad) over a chunk of groups at a time. A
// quad's per-lane integer partials are reduced to one vector (ReduceQuad), then 4 quads are
// transposed so that one zmm holds one block's isum for the 16 rows (TransposeQuads; the
// scales go the same way, QuadScaleBits), and the float sequence runs on those. Batched path
// (more tokens, matmul_legacy_batched_avx512.cc): panels are first expanded into
// VNNI-interleaved int16 scratch; see there.
//
// Decode groups. Q4_0 / Q4_1: a group is 4 weight blocks (128 elements). Their 4 x 16 nibble
// bytes load into one zmm v, 128-bit lane k = block k (a broadcast plus three merge-masked
// broadcasts: load-port work, no shuffles). Viewed as 16-bit lanes, lane j of block k holds
// bytes 2j and 2j+1, so shifts and masks alone give four int16 code registers:
//
//   w[0] = v & 15           element 2j        (low nibble of byte 2j)
//   w[1] = (v >> 4) & 15    element 2j + 16   (high nibble of byte 2j)
//   w[2] = (v >> 8) & 15    element 2j + 1    (low nibble of byte 2j + 1)
//   w[3] = v >> 12          element 2j + 17   (high nibble of byte 2j + 1)
//
// Activations are stored in that order, so four vpdpwssd give int32 lanes 4k..4k+3 = partial
// dots of block k:
//
//   XQ4Group<F> (per token per 4 blocks)
//   +--------------------------------------+---------------------+
//   | int16 x[4][32]                        | i32 bias8[16]       |  Q4_0
//   | x[p][8k + j] = block k element E(p,j) | -8 * sum_k in 4k    |
//   +--------------------------------------+---------------------+
//   |                 (same)                |                        Q4_1
//   +--------------------------------------+
//   E(p, j) = 2j + (p & 2 ? 1 : 0) + (p & 1 ? 16 : 0)
//
// Q4_0's "- 8" enters the dot as the starting value bias8 (block k's sum of codes times -8 in
// lane 4k, 0 in lanes 4k+1..4k+3).
//
// Q8_0: a group is 2 blocks (64 elements). w[0] = vpmovsxbw of (block 0 bytes 0..15, block 1
// bytes 0..15), w[1] the same for bytes 16..31, so int32 lanes 0..7 belong to block 0 and
// 8..15 to block 1; XQ8Group: int16 x[2][32], x[h][16k + i] = block k element 16h + i.
//
// Overflow: |x| <= 32767, |w| <= 128 and 32 products per block: < 2^27.
#include "kernels/cpu/matmul_legacy_avx512.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "core/status.h"
#include "kernels/cpu/matmul_kernels.h"

// GCC 12's AVX-512 intrinsics (_mm512_cvtepi32_ps, extracts) start from _mm512_undefined_*(),
// which it then reports as used uninitialized; those warnings are false positives.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace cleave::kernels::cpu::legacy {
namespace {

// Q4_0 groups carry bias8 (the "- 8" as a dot's starting value).
template <Fmt F>
struct alignas(64) XQ4Group {
  int16_t x[4][32];
  int32_t bias8[16];
};
template <>
struct alignas(64) XQ4Group<Fmt::kQ4_1> {
  int16_t x[4][32];
};
struct alignas(64) XQ8Group {
  int16_t x[2][32];
};

template <Fmt F>
struct DecodeTraits;
template <>
struct DecodeTraits<Fmt::kQ4_0> {
  static constexpr int kBlocks = 4, kCodeRegs = 4;
  using XGroup = XQ4Group<Fmt::kQ4_0>;
};
template <>
struct DecodeTraits<Fmt::kQ4_1> {
  static constexpr int kBlocks = 4, kCodeRegs = 4;
  using XGroup = XQ4Group<Fmt::kQ4_1>;
};
template <>
struct DecodeTraits<Fmt::kQ8_0> {
  static constexpr int kBlocks = 2, kCodeRegs = 2;
  using XGroup = XQ8Group;
};

// Per-token decode activations: groups [num_tokens][num_groups] plus the float sequence's
// per-block factors (TokenScales).
template <Fmt F>
struct DecodeActivations {
  std::vector<typename DecodeTraits<F>::XGroup> groups;
  TokenScales scales;
  int64_t num_groups = 0;
  const typename DecodeTraits<F>::XGroup* token(int64_t t) const {
    return groups.data() + t * num_groups;
  }
};

inline __m128i Load128(const uint8_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}

// The integer codes of the group at p (scales are gathered per panel, see GatherScales);
// valid_blocks < kBlocks only for a row's last group, whose missing blocks are neither read nor
// used (their codes come out 0).
template <Fmt F, bool kFull>
CLEAVE_ALWAYS_INLINE void LoadCodes(const uint8_t* p, int valid_blocks,
                                    __m512i (&w)[DecodeTraits<F>::kCodeRegs]) {
  constexpr int kBlockBytes = FmtTraits<F>::kBlockBytes, kQs = FmtTraits<F>::kQsOffset;
  const auto qs = [&](int k, int offset) { return Load128(p + kBlockBytes * k + kQs + offset); };
  if constexpr (F == Fmt::kQ8_0) {
    for (int h = 0; h < 2; ++h) {
      __m256i v = _mm256_broadcastsi128_si256(qs(0, 16 * h));
      if (kFull || valid_blocks > 1) {
        v = _mm256_mask_broadcast_i32x4(v, 0xf0, qs(1, 16 * h));
      } else {
        v = _mm256_maskz_mov_epi32(0x0f, v);
      }
      w[h] = _mm512_cvtepi8_epi16(v);
    }
  } else {
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
    const __m512i m4 = _mm512_set1_epi16(0x0f);
    w[0] = _mm512_and_si512(v, m4);
    w[1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    w[2] = _mm512_and_si512(_mm512_srli_epi16(v, 8), m4);
    w[3] = _mm512_srli_epi16(v, 12);
  }
}

// One row's integer partials for one group and one token (lanes as described at the top).
template <Fmt F>
CLEAVE_ALWAYS_INLINE __m512i DotGroup(const __m512i (&w)[DecodeTraits<F>::kCodeRegs],
                                      const typename DecodeTraits<F>::XGroup& x) {
  const auto xv = [&](int p) { return _mm512_load_si512(x.x[p]); };
  if constexpr (F == Fmt::kQ8_0) {
    return _mm512_dpwssd_epi32(_mm512_madd_epi16(w[0], xv(0)), w[1], xv(1));
  } else {
    // Two chains of two halve the vpdpwssd latency on the critical path.
    __m512i i0;
    if constexpr (F == Fmt::kQ4_0) {
      i0 = _mm512_dpwssd_epi32(_mm512_load_si512(x.bias8), w[0], xv(0));
    } else {
      i0 = _mm512_madd_epi16(w[0], xv(0));
    }
    __m512i i1 = _mm512_madd_epi16(w[2], xv(2));
    i0 = _mm512_dpwssd_epi32(i0, w[1], xv(1));
    i1 = _mm512_dpwssd_epi32(i1, w[3], xv(3));
    return _mm512_add_epi32(i0, i1);
  }
}

// Prefetches the lines of the group at p + ahead (a group spans two or three lines; touching
// its first and last byte covers them all as the loop advances).
template <Fmt F>
CLEAVE_ALWAYS_INLINE void PrefetchGroup(const uint8_t* p, int64_t ahead) {
  constexpr int kGroupBytes = FmtTraits<F>::kBlockBytes * DecodeTraits<F>::kBlocks;
  _mm_prefetch(reinterpret_cast<const char*>(p + ahead), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(p + ahead + kGroupBytes - 1), _MM_HINT_T0);
}

// How far ahead the decode path prefetches: enough bytes in flight to cover memory latency at
// one core's bandwidth (~250 ns x 30 GB/s); more was no better and sometimes worse.
constexpr int64_t kPrefetchBytes = 8192;
// Groups per pass of PanelDirect (its quad sums stay in L1: 16 x 12 x 64 bytes for 2 tokens).
constexpr int64_t kDecodeChunkGroups = 16;

// One panel (16 rows from `base`, the last nr valid) x T tokens from t0, weights read in place.
template <Fmt F, int T>
void PanelDirect(const uint8_t* base, int64_t row_bytes, int nr, const DecodeActivations<F>& xa,
                 int64_t num_blocks, int64_t t0, float* y, int64_t rows_total) {
  using XGroup = typename DecodeTraits<F>::XGroup;
  constexpr int kB = DecodeTraits<F>::kBlocks;
  constexpr int kGroupBytes = FmtTraits<F>::kBlockBytes * kB;
  const uint8_t* row[kPanel];
  for (int r = 0; r < kPanel; ++r) row[r] = base + std::min(r, nr - 1) * row_bytes;
  const XGroup* x[T];
  const float* dx[T];
  const float* sx[T];
  for (int t = 0; t < T; ++t) {
    x[t] = xa.token(t0 + t);
    dx[t] = xa.scales.dx_of(t0 + t);
    sx[t] = xa.scales.sx_of(t0 + t);
  }
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  const int64_t full = num_blocks / kB;
  // Pass 1 reads 4 rows at a time over a chunk of groups (4 streams, as a 4-row tile did;
  // 16 rows at once read ~10% slower on two threads) into quad sums; pass 2 transposes them
  // and runs the float sequence.
  struct alignas(64) QuadSums {
    __m512i dot[T][4];  // [token][quad]
    __m512i scale[4];   // [quad]
  };
  QuadSums sums[kDecodeChunkGroups];
  // Reads go quad-chunk by quad-chunk (4 rows x one chunk of groups), panel after panel. While
  // it reads a group, a quad prefetches the same group position ahead_steps quad-chunks later
  // (in this panel or the next), at least kPrefetchBytes further on in reading order.
  const int64_t num_chunks = (xa.num_groups + kDecodeChunkGroups - 1) / kDecodeChunkGroups;
  const int64_t chunk_row_bytes = std::min(xa.num_groups, kDecodeChunkGroups) * kGroupBytes;
  const int64_t ahead_steps =
      std::max<int64_t>(1, (kPrefetchBytes + 4 * chunk_row_bytes - 1) / (4 * chunk_row_bytes));
  const auto ahead_of = [&](int64_t chunk, int q) {
    const int64_t step = chunk * 4 + q + ahead_steps;
    const int64_t panels = step / (4 * num_chunks), rest = step % (4 * num_chunks);
    return panels * kPanel * row_bytes + (rest % 4 - q) * 4 * row_bytes +
           (rest / 4 - chunk) * kDecodeChunkGroups * kGroupBytes;
  };
  const auto quad = [&]<bool kFull>(int q, int64_t g, int valid, int64_t prefetch_ahead,
                                    QuadSums& out) {
    __m512i dot[T][4], heads[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const uint8_t* p = row[4 * q + i] + g * kGroupBytes;
      PrefetchGroup<F>(p, prefetch_ahead);
      heads[i] = LoadHead<F, kFull>(p, valid);
      __m512i w[DecodeTraits<F>::kCodeRegs];
      LoadCodes<F, kFull>(p, valid, w);
#pragma GCC unroll 2
      for (int t = 0; t < T; ++t) dot[t][i] = DotGroup<F>(w, x[t][g]);
    }
#pragma GCC unroll 2
    for (int t = 0; t < T; ++t) {
      out.dot[t][q] = ReduceQuad(dot[t][0], dot[t][1], dot[t][2], dot[t][3]);
    }
    out.scale[q] = QuadScaleBits<F>(heads);
  };
  for (int64_t g0 = 0; g0 < xa.num_groups; g0 += kDecodeChunkGroups) {
    const int64_t g1 = std::min<int64_t>(xa.num_groups, g0 + kDecodeChunkGroups);
    const int64_t full_end = std::min(g1, full);
    for (int q = 0; q < 4; ++q) {
      const int64_t ahead = ahead_of(g0 / kDecodeChunkGroups, q);
      for (int64_t g = g0; g < full_end; ++g) {
        quad.template operator()<true>(q, g, kB, ahead, sums[g - g0]);
      }
      if (full_end < g1) {
        quad.template operator()<false>(q, full, static_cast<int>(num_blocks - full * kB), ahead,
                                        sums[full - g0]);
      }
    }
    for (int64_t g = g0; g < g1; ++g) {
      const QuadSums& qs = sums[g - g0];
      __m512i scale_bits[kB];
      TransposeQuads<F>(qs.scale, scale_bits);
      __m512i isum[T][kB];
#pragma GCC unroll 2
      for (int t = 0; t < T; ++t) TransposeQuads<F>(qs.dot[t], isum[t]);
      const int valid = static_cast<int>(std::min<int64_t>(kB, num_blocks - g * kB));
#pragma GCC unroll 4
      for (int k = 0; k < kB; ++k) {
        if (k >= valid) break;
        const BlockScales s = ScalesOf<F>(scale_bits[k]);
        const int64_t b = g * kB + k;
#pragma GCC unroll 2
        for (int t = 0; t < T; ++t) {
          acc[t] = BlockStep<F>(isum[t][k], s.d, s.m, dx[t][b], sx[t][b], acc[t]);
        }
      }
    }
  }
  const __mmask16 valid_rows = static_cast<__mmask16>((1u << nr) - 1);
  for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y + (t0 + t) * rows_total, valid_rows, acc[t]);
}

// Rearranges one token's quantized blocks (QuantizeRowFn output) into F's decode groups.
template <Fmt F>
void ArrangeToken(const int16_t* qs, int64_t num_blocks, typename DecodeTraits<F>::XGroup* out) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const int16_t* q = qs + 32 * b;
    auto& g = out[b / DecodeTraits<F>::kBlocks];
    const int k = static_cast<int>(b % DecodeTraits<F>::kBlocks);
    if constexpr (F == Fmt::kQ8_0) {
      std::memcpy(g.x[0] + 16 * k, q, 32);
      std::memcpy(g.x[1] + 16 * k, q + 16, 32);
    } else {
      for (int p = 0; p < 4; ++p) {
        const int base = (p & 2 ? 1 : 0) + (p & 1 ? 16 : 0);  // E(p, j) - 2j, see the top
        for (int j = 0; j < 8; ++j) g.x[p][8 * k + j] = q[2 * j + base];
      }
      if constexpr (F == Fmt::kQ4_0) {
        for (int l = 0; l < 4; ++l) g.bias8[4 * k + l] = l == 0 ? -8 * BlockCodeSum(q) : 0;
      }
    }
  }
}

template <Fmt F>
void DecodeRows(const WeightView& w, const DecodeActivations<F>& xa, int64_t num_tokens,
                int64_t row_begin, int64_t row_end, float* y) {
  const int64_t num_blocks = w.cols / 32;
  const int64_t row_bytes = num_blocks * FmtTraits<F>::kBlockBytes;
  const auto* data = static_cast<const uint8_t*>(w.data);
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kPanel) {
    const int nr = static_cast<int>(std::min<int64_t>(kPanel, row_end - r0));
    const uint8_t* base = data + r0 * row_bytes;
    // Token pairs, then the odd one: a panel's rows stay in L1 after the first pair.
    int64_t t = 0;
    for (; t + 2 <= num_tokens; t += 2) {
      PanelDirect<F, 2>(base, row_bytes, nr, xa, num_blocks, t, y + r0, w.rows);
    }
    if (t < num_tokens) PanelDirect<F, 1>(base, row_bytes, nr, xa, num_blocks, t, y + r0, w.rows);
  }
}

template <Fmt F>
void RunDecode(std::span<const MatMulOutput> products, const float* x, int64_t num_tokens,
               ThreadPool& pool, QuantizeRowFn quantize_row) {
  using XGroup = typename DecodeTraits<F>::XGroup;
  constexpr int kGroupBlocks = DecodeTraits<F>::kBlocks;
  thread_local DecodeActivations<F> buffer;
  DecodeActivations<F>& xa = buffer;
  const int64_t cols = products[0].w.cols;
  const int64_t num_blocks = cols / 32;
  xa.num_groups = (num_blocks + kGroupBlocks - 1) / kGroupBlocks;
  xa.groups.resize(num_tokens * xa.num_groups);
  xa.scales.Resize(num_tokens, num_blocks);
  thread_local std::vector<int16_t> qs;
  qs.resize(32 * num_blocks);
  for (int64_t t = 0; t < num_tokens; ++t) {
    XGroup* out = xa.groups.data() + t * xa.num_groups;
    // A partial last group's missing blocks must read as zeros.
    std::memset(static_cast<void*>(out + xa.num_groups - 1), 0, sizeof(XGroup));
    QuantizeToken(quantize_row, x + t * cols, num_blocks, qs.data(), xa.scales, t);
    ArrangeToken<F>(qs.data(), num_blocks, out);
  }
  ForEachRowRange(products, pool, kPanel,
                  [&](const WeightView& w, int64_t lo, int64_t hi, float* y) {
                    DecodeRows<F>(w, xa, num_tokens, lo, hi, y);
                  });
}

template <Fmt F>
void Run(std::span<const MatMulOutput> products, const float* x, int64_t num_tokens,
         ThreadPool& pool, QuantizeRowFn quantize_row) {
  if (num_tokens <= kDecodeMaxTokens) {
    RunDecode<F>(products, x, num_tokens, pool, quantize_row);
  } else {
    RunBatched<F>(products, x, num_tokens, pool, quantize_row);
  }
}

}  // namespace

void QuantizeToken(QuantizeRowFn quantize_row, const float* x, int64_t num_blocks, int16_t* qs,
                   TokenScales& scales, int64_t t) {
  thread_local std::vector<float> s16;
  s16.resize(2 * num_blocks);
  float* dx = scales.dx.data() + t * scales.num_blocks;
  float* sx = scales.sx.data() + t * scales.num_blocks;
  quantize_row(x, num_blocks, qs, dx, s16.data());
  for (int64_t b = 0; b < num_blocks; ++b) {
    sx[b] = dx[b] * static_cast<float>(BlockCodeSum(qs + 32 * b));
  }
}

}  // namespace cleave::kernels::cpu::legacy

namespace cleave::kernels::cpu {

bool LegacyHandlesAvx512(DType dtype) {
  return dtype == DType::kQ4_0 || dtype == DType::kQ4_1 || dtype == DType::kQ8_0;
}

void LegacyMatMulAvx512(std::span<const MatMulOutput> products, const float* x, int64_t num_tokens,
                        ThreadPool& pool) {
  using legacy::Fmt;
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
      return legacy::Run<Fmt::kQ4_0>(products, x, num_tokens, pool, quantize_row);
    case DType::kQ4_1:
      return legacy::Run<Fmt::kQ4_1>(products, x, num_tokens, pool, quantize_row);
    case DType::kQ8_0:
      return legacy::Run<Fmt::kQ8_0>(products, x, num_tokens, pool, quantize_row);
    default:
      CLEAVE_CHECK(false, "LegacyMatMulAvx512: unsupported type {}", DTypeName(dtype));
  }
}

}  // namespace cleave::kernels::cpu
