// AVX-512 VNNI MatMul for the legacy block formats Q4_0, Q4_1 and Q8_0 (the formats of the
// default model and of common Q4_0/Q8_0 files), reading GGUF blocks in place with 512-bit
// vectors and an int16 activation layout arranged to match them (activations quantized as in
// matmul_kernels.h: int16 per block of 32, d = amax / 32767).
//
// Q4_0 / Q4_1: a group is 4 weight blocks (128 elements). Their 4 x 16 nibble bytes load into
// one zmm, 128-bit lane k = block k; vpunpck{l,h}bw with zero widens bytes 0..7 / 8..15 of each
// block to int16, and `& 15` / `>> 4` of those give 4 registers w[p], p = 0..3, with lane k
// holding elements 8p..8p+7 of block k. Activations are stored in that order, so four
// vpdpwssd give int32 lanes 4k..4k+3 = partial dots of block k:
//
//   XQ4Group (448 bytes, per token per 4 blocks)
//   +--------------------------------------+-----------+--------------+-----------+
//   | int16 x[4][32]                        | f32 dx[16]| i32 bias8[16]| f32 s[16] |
//   | x[p][8k + i] = block k element 8p + i | d_k x4    | -8 * sum_k   | dx * sum_k|
//   +--------------------------------------+-----------+--------------+-----------+
//   (bias8 and s hold block k's sum in lane 4k and 0 in lanes 4k+1..4k+3)
//
// The f16 scales (and Q4_1 mins) of the 4 blocks all lie in the group's first 64 bytes; one
// vpermw spreads each to 4 lanes and vcvtph2ps makes them floats. Q4_0's "- 8" enters as the
// dot's starting value bias8; Q4_1's min m multiplies s, the float block sums.
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
// Tiling: for decode (few tokens) each weight group is expanded in registers and used for all
// tokens; for prefill 4 rows are first expanded into scratch, then every tile of 4 tokens runs
// over them with 16 accumulators.
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

namespace cleave::kernels::cpu {
namespace {

struct alignas(64) XQ4Group {
  int16_t x[4][32];
  float dx[16];
  int32_t bias8[16];
  float s[16];
};
struct alignas(64) XQ8Group {
  int16_t x[2][32];
  float dx[16];
};

// Expanded weights of one group, as registers or as scratch.
struct alignas(64) WGroup {
  __m512i w[4];  // int16 codes in the XGroup order (Q8_0 uses w[0], w[1])
  __m512 scale;  // d per lane
  __m512 min;    // Q4_1: m per lane
};

enum class Fmt { kQ4_0, kQ4_1, kQ8_0 };

template <Fmt F>
struct Traits;
template <>
struct Traits<Fmt::kQ4_0> {
  static constexpr int kBlockBytes = 18, kQsOffset = 2, kBlocks = 4;
  using XGroup = XQ4Group;
};
template <>
struct Traits<Fmt::kQ4_1> {
  static constexpr int kBlockBytes = 20, kQsOffset = 4, kBlocks = 4;
  using XGroup = XQ4Group;
};
template <>
struct Traits<Fmt::kQ8_0> {
  static constexpr int kBlockBytes = 34, kQsOffset = 2, kBlocks = 2;
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

template <Fmt F>
inline void LoadGroup(const uint8_t* p, int valid_blocks, WGroup& g) {
  using T = Traits<F>;
  const int span = T::kBlockBytes * valid_blocks;
  const __mmask64 head_mask = span >= 64 ? ~__mmask64{0} : ((__mmask64{1} << span) - 1);
  const __m512i head = _mm512_maskz_loadu_epi8(head_mask, p);
  const auto qs = [&](int k, int offset) {
    return _mm_loadu_si128(
        reinterpret_cast<const __m128i*>(p + T::kBlockBytes * k + T::kQsOffset + offset));
  };
  if constexpr (F == Fmt::kQ8_0) {
    const __m512i d_idx = ScaleIndex<34, 8, 0>::Load();
    g.scale = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(d_idx, head)));
    for (int h = 0; h < 2; ++h) {
      __m256i v = _mm256_castsi128_si256(qs(0, 16 * h));
      v = _mm256_inserti128_si256(v, valid_blocks > 1 ? qs(1, 16 * h) : _mm_setzero_si128(), 1);
      g.w[h] = _mm512_cvtepi8_epi16(v);
    }
  } else {
    const __m512i d_idx = ScaleIndex<T::kBlockBytes, 4, 0>::Load();
    g.scale = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(d_idx, head)));
    if constexpr (F == Fmt::kQ4_1) {
      const __m512i m_idx = ScaleIndex<T::kBlockBytes, 4, 2>::Load();
      g.min = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(m_idx, head)));
    }
    __m512i v;
    if (valid_blocks == 4) {
      v = _mm512_inserti32x4(_mm512_castsi128_si512(qs(0, 0)), qs(1, 0), 1);
      v = _mm512_inserti32x4(v, qs(2, 0), 2);
      v = _mm512_inserti32x4(v, qs(3, 0), 3);
    } else {
      v = _mm512_setzero_si512();
      if (valid_blocks > 0) v = _mm512_inserti32x4(v, qs(0, 0), 0);
      if (valid_blocks > 1) v = _mm512_inserti32x4(v, qs(1, 0), 1);
      if (valid_blocks > 2) v = _mm512_inserti32x4(v, qs(2, 0), 2);
    }
    const __m512i zero = _mm512_setzero_si512();
    const __m512i m4 = _mm512_set1_epi16(0x0f);
    const __m512i u0 = _mm512_unpacklo_epi8(v, zero);  // bytes 0..7 of each block
    const __m512i u1 = _mm512_unpackhi_epi8(v, zero);  // bytes 8..15
    g.w[0] = _mm512_and_si512(u0, m4);
    g.w[1] = _mm512_and_si512(u1, m4);
    g.w[2] = _mm512_srli_epi16(u0, 4);
    g.w[3] = _mm512_srli_epi16(u1, 4);
  }
}

template <Fmt F>
inline __m512 Accumulate(const WGroup& w, const typename Traits<F>::XGroup& x, __m512 acc) {
  if constexpr (F == Fmt::kQ8_0) {
    __m512i i = _mm512_madd_epi16(w.w[0], _mm512_load_si512(x.x[0]));
    i = _mm512_dpwssd_epi32(i, w.w[1], _mm512_load_si512(x.x[1]));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(w.scale, _mm512_load_ps(x.dx)),
                           acc);
  } else {
    __m512i i = F == Fmt::kQ4_0 ? _mm512_load_si512(x.bias8) : _mm512_setzero_si512();
    for (int p = 0; p < 4; ++p) i = _mm512_dpwssd_epi32(i, w.w[p], _mm512_load_si512(x.x[p]));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(w.scale, _mm512_load_ps(x.dx)), acc);
    if constexpr (F == Fmt::kQ4_1) acc = _mm512_fmadd_ps(w.min, _mm512_load_ps(x.s), acc);
    return acc;
  }
}

// Per-token quantized activations in the layout of format F.
template <Fmt F>
struct Activations {
  using XGroup = typename Traits<F>::XGroup;
  std::vector<XGroup> groups;  // [num_tokens][num_groups]
  int64_t num_groups = 0;
  const XGroup* token(int64_t t) const { return groups.data() + t * num_groups; }
};

// Rearranges one token's quantized blocks (QuantizeRowFn output) into F's groups.
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
      for (int p = 0; p < 4; ++p) std::memcpy(g.x[p] + 8 * k, q + 8 * p, 16);
      for (int l = 0; l < 4; ++l) {
        g.dx[4 * k + l] = d[b];
        g.bias8[4 * k + l] = l == 0 ? -8 * sum : 0;
        g.s[4 * k + l] = l == 0 ? d[b] * static_cast<float>(sum) : 0.0f;
      }
    }
  }
}

// Rows [r0, r0 + R) x tokens [t0, t0 + T), weights expanded in registers per group.
template <Fmt F, int R, int T>
void TileDirect(const uint8_t* const* rows, const Activations<F>& xa, int64_t num_blocks,
                int64_t t0, __m512 (&acc)[R][T]) {
  constexpr int kB = Traits<F>::kBlocks;
  constexpr int kGroupBytes = Traits<F>::kBlockBytes * kB;
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  const int64_t full = num_blocks / kB;
  for (int64_t g = 0; g < xa.num_groups; ++g) {
    const int valid = g < full ? kB : static_cast<int>(num_blocks - g * kB);
    for (int r = 0; r < R; ++r) {
      WGroup w;
      LoadGroup<F>(rows[r] + g * kGroupBytes, valid, w);
      for (int t = 0; t < T; ++t) acc[r][t] = Accumulate<F>(w, xa.token(t0 + t)[g], acc[r][t]);
    }
  }
}

// The same with weights pre-expanded into scratch [R][num_groups].
template <Fmt F, int R, int T>
void TileExpanded(const WGroup* scratch, const Activations<F>& xa, int64_t t0,
                  __m512 (&acc)[R][T]) {
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  for (int64_t g = 0; g < xa.num_groups; ++g) {
    for (int r = 0; r < R; ++r) {
      const WGroup& w = scratch[r * xa.num_groups + g];
      for (int t = 0; t < T; ++t) acc[r][t] = Accumulate<F>(w, xa.token(t0 + t)[g], acc[r][t]);
    }
  }
}

// Horizontal sum (GCC 12's _mm512_reduce_add_ps trips -Wuninitialized).
inline float HSum512(__m512 v) {
  const __m256 h =
      _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_maskz_extractf32x8_ps(0xff, v, 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <int R, int T>
void Store(__m512 (&acc)[R][T], int64_t r0, int64_t t0, int64_t rows_total, float* y) {
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) y[(t0 + t) * rows_total + r0 + r] = HSum512(acc[r][t]);
  }
}

constexpr int kRowTile = 4;
constexpr int kTokenTile = 4;

template <Fmt F, int R>
void RowsDirect(const uint8_t* const* rows, const Activations<F>& xa, int64_t num_blocks,
                int64_t num_tokens, int64_t r0, int64_t rows_total, float* y) {
  int64_t t0 = 0;
  for (; t0 + 2 <= num_tokens; t0 += 2) {
    __m512 acc[R][2];
    TileDirect<F, R, 2>(rows, xa, num_blocks, t0, acc);
    Store<R, 2>(acc, r0, t0, rows_total, y);
  }
  if (t0 < num_tokens) {
    __m512 acc[R][1];
    TileDirect<F, R, 1>(rows, xa, num_blocks, t0, acc);
    Store<R, 1>(acc, r0, t0, rows_total, y);
  }
}

template <Fmt F, int R>
void RowsExpanded(const WGroup* scratch, const Activations<F>& xa, int64_t num_tokens, int64_t r0,
                  int64_t rows_total, float* y) {
  int64_t t0 = 0;
  for (; t0 + kTokenTile <= num_tokens; t0 += kTokenTile) {
    __m512 acc[R][kTokenTile];
    TileExpanded<F, R, kTokenTile>(scratch, xa, t0, acc);
    Store<R, kTokenTile>(acc, r0, t0, rows_total, y);
  }
  for (; t0 < num_tokens; ++t0) {
    __m512 acc[R][1];
    TileExpanded<F, R, 1>(scratch, xa, t0, acc);
    Store<R, 1>(acc, r0, t0, rows_total, y);
  }
}

template <Fmt F>
void RunRows(const WeightView& w, const Activations<F>& xa, int64_t num_tokens, int64_t row_begin,
             int64_t row_end, float* y) {
  constexpr int kB = Traits<F>::kBlocks;
  constexpr int kGroupBytes = Traits<F>::kBlockBytes * kB;
  const int64_t num_blocks = w.cols / 32;
  const int64_t row_bytes = num_blocks * Traits<F>::kBlockBytes;
  const auto* data = static_cast<const uint8_t*>(w.data);
  const bool expand = num_tokens > 2;
  thread_local std::vector<WGroup> scratch;
  if (expand) scratch.resize(kRowTile * xa.num_groups);
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kRowTile) {
    const int nr = static_cast<int>(std::min<int64_t>(kRowTile, row_end - r0));
    const uint8_t* rows[kRowTile];
    for (int r = 0; r < nr; ++r) rows[r] = data + (r0 + r) * row_bytes;
    if (expand) {
      const int64_t full = num_blocks / kB;
      for (int r = 0; r < nr; ++r) {
        for (int64_t g = 0; g < xa.num_groups; ++g) {
          const int valid = g < full ? kB : static_cast<int>(num_blocks - g * kB);
          LoadGroup<F>(rows[r] + g * kGroupBytes, valid, scratch[r * xa.num_groups + g]);
        }
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
    } else {
      switch (nr) {
        case 4:
          RowsDirect<F, 4>(rows, xa, num_blocks, num_tokens, r0, w.rows, y);
          break;
        case 3:
          RowsDirect<F, 3>(rows, xa, num_blocks, num_tokens, r0, w.rows, y);
          break;
        case 2:
          RowsDirect<F, 2>(rows, xa, num_blocks, num_tokens, r0, w.rows, y);
          break;
        default:
          RowsDirect<F, 1>(rows, xa, num_blocks, num_tokens, r0, w.rows, y);
          break;
      }
    }
  }
}

template <Fmt F>
void Run(const WeightView& w, const float* x, int64_t num_tokens, float* y, ThreadPool& pool,
         QuantizeRowFn quantize_row) {
  constexpr int kB = Traits<F>::kBlocks;
  // Named through a plain reference: inside the lambdas a thread_local would resolve to the
  // worker thread's own (empty) instance.
  thread_local Activations<F> buffer;
  Activations<F>& xa = buffer;
  const int64_t num_blocks = w.cols / 32;
  xa.num_groups = (num_blocks + kB - 1) / kB;
  xa.groups.assign(num_tokens * xa.num_groups, typename Traits<F>::XGroup{});
  pool.ParallelFor(num_tokens, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<int16_t> qs;
    thread_local std::vector<float> d, s16;
    qs.resize(32 * num_blocks);
    d.resize(num_blocks);
    s16.resize(2 * num_blocks);
    for (int64_t t = begin; t < end; ++t) {
      quantize_row(x + t * w.cols, num_blocks, qs.data(), d.data(), s16.data());
      ArrangeToken<F>(qs.data(), d.data(), num_blocks, xa.groups.data() + t * xa.num_groups);
    }
  });
  pool.ParallelFor(w.rows, kRowTile, [&](int64_t begin, int64_t end) {
    RunRows<F>(w, xa, num_tokens, begin, end, y);
  });
}

}  // namespace

bool LegacyMatMulAvx512(const WeightView& w, const float* x, int64_t num_tokens, float* y,
                        ThreadPool& pool) {
  const QuantizeRowFn quantize_row = Avx512MatMulKernels().quantize != nullptr
                                         ? Avx512MatMulKernels().quantize
                                         : QuantizeActivationRowScalar;
  switch (w.dtype) {
    case DType::kQ4_0:
      Run<Fmt::kQ4_0>(w, x, num_tokens, y, pool, quantize_row);
      return true;
    case DType::kQ4_1:
      Run<Fmt::kQ4_1>(w, x, num_tokens, y, pool, quantize_row);
      return true;
    case DType::kQ8_0:
      Run<Fmt::kQ8_0>(w, x, num_tokens, y, pool, quantize_row);
      return true;
    default:
      return false;
  }
}

}  // namespace cleave::kernels::cpu
