// The batched path (more than kDecodeMaxTokens tokens) of the AVX-512 VNNI legacy-format MatMul:
// "rows in lanes". The numerics (one in-order float sequence per row and token) are at the top of
// matmul_legacy_avx512.cc; this path computes the same isum per block and runs the same float
// steps (BlockStep), so its outputs equal the decode path's bit for bit.
//
// A panel of 16 rows is expanded, a chunk of blocks at a time, into VNNI-interleaved int16
// scratch (Q4_0's codes already minus 8, so no bias term is needed):
//
//   PanelBlock (per block of 32 columns, 16 rows)
//   +---------------------------------------------+-----------+-----------+
//   | int16 w[16 pairs][16 rows][2]                | f32 d[16] | f32 m[16] |
//   | w[p][r] = (row r element 2p, element 2p + 1) | scales    | Q4_1 mins |
//   +---------------------------------------------+-----------+-----------+
//
// so one zmm w[p] multiplies, with vpdpwssd, the 16 rows by one token's elements 2p and 2p+1
// broadcast from memory as one 32-bit value ({1to16}); 16 of them give one block's isum for
// 16 rows in 16 int32 lanes, and the float step costs 3 (Q4_1: 4) ops per 16 vpdpwssd. The tile
// is 2 panels x 6 tokens (12 int32 + 12 float accumulators, 2 code registers), looping over
// every token tile while the chunk's expanded panels stay in L1/L2; float accumulators are
// parked in y between chunks (an exact store and reload).
//
// Expansion: the 16 rows' 16 code bytes of a block (Q8_0: each half of 32) are transposed so
// that one zmm holds 4 bytes of every row (a vpermd and a 4 x 4 transpose of 128-bit lanes),
// then vpshufb spreads each byte pair into an int16 pair and masks/shifts pick the nibbles
// (Q8_0: an arithmetic shift sign-extends).
#include <array>
#include <cstring>
#include <vector>

#include "kernels/cpu/matmul_legacy_avx512.h"

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which it then reports as used
// uninitialized; those warnings are false positives.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace cleave::kernels::cpu::legacy {
namespace {

struct alignas(64) PanelBlock {
  __m512i w[16];
  __m512 d;
  __m512 m;  // Q4_1 only
};

constexpr int kPanelsPerTile = 2;
constexpr int kTokenTile = 6;
// Blocks expanded at a time (a multiple of every group size): 2 panels x 16 blocks x 1.1 KB =
// 37 KB of scratch, L1-resident while every token tile runs over it.
constexpr int64_t kChunkBlocks = 16;

// The batched activations: the quantizer's int16 codes in natural order, per token.
struct BatchedActivations {
  std::vector<int16_t> qs;  // [num_tokens][num_blocks * 32]
  TokenScales scales;
  int64_t num_blocks = 0;
  const int16_t* token(int64_t t) const { return qs.data() + t * num_blocks * 32; }
};

inline __m128i Load128(const uint8_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}

// 16 bytes at offset of each of the 16 rows -> e[m], int32 lane r = bytes 4m..4m+3 of row r.
CLEAVE_ALWAYS_INLINE void TransposeRowBytes(const uint8_t* const (&row)[kPanel], int64_t offset,
                                            __m512i (&e)[4]) {
  const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  __m512i z[4];
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    // 128-bit lane i = row 4q + i; then int32 lane 4m + i = its dword m.
    __m512i v = _mm512_castsi128_si512(Load128(row[4 * q] + offset));
    v = _mm512_inserti32x4(v, Load128(row[4 * q + 1] + offset), 1);
    v = _mm512_inserti32x4(v, Load128(row[4 * q + 2] + offset), 2);
    v = _mm512_inserti32x4(v, Load128(row[4 * q + 3] + offset), 3);
    z[q] = _mm512_permutexvar_epi32(perm, v);
  }
  TransposeLanes4x4(z, e);
}

// vpshufb indices: in every int32 lane, its bytes kA and kB go to the low bytes of its two int16
// halves (kHigh: to the high bytes), the other bytes become 0.
template <int kA, int kB, bool kHigh>
struct PairIndex {
  static constexpr std::array<int8_t, 64> Make() {
    std::array<int8_t, 64> idx{};
    for (int i = 0; i < 64; ++i) {
      const int lane_base = i % 16 / 4 * 4, pos = i % 4;
      const int src = lane_base + (pos < 2 ? kA : kB);
      const bool take = (pos % 2 == 1) == kHigh;
      idx[i] = static_cast<int8_t>(take ? src : 0x80);
    }
    return idx;
  }
  alignas(64) static constexpr std::array<int8_t, 64> kIdx = Make();
  static __m512i Load() { return _mm512_load_si512(kIdx.data()); }
};

// The 16 rows' scales of the group starting at block b (valid_blocks of it inside the rows).
template <Fmt F>
CLEAVE_ALWAYS_INLINE void GroupScales(const uint8_t* const (&row)[kPanel], int64_t offset,
                                      int valid_blocks,
                                      BlockScales (&s)[FmtTraits<F>::kGroupBlocks]) {
  constexpr int kGB = FmtTraits<F>::kGroupBlocks;
  __m512i quad[4];
  for (int q = 0; q < 4; ++q) {
    __m512i heads[4];
    for (int i = 0; i < 4; ++i) {
      const uint8_t* p = row[4 * q + i] + offset;
      heads[i] =
          valid_blocks == kGB ? LoadHead<F, true>(p, kGB) : LoadHead<F, false>(p, valid_blocks);
    }
    quad[q] = QuadScaleBits<F>(heads);
  }
  __m512i t[kGB];
  TransposeQuads<F>(quad, t);
  for (int k = 0; k < kGB; ++k) s[k] = ScalesOf<F>(t[k]);
}

// Expands blocks [b_begin, b_end) of a panel (rows from base, the last nr valid) into out;
// b_begin is a multiple of the group size and b_end a multiple of it or the rows' end.
template <Fmt F>
void ExpandPanel(const uint8_t* base, int64_t row_bytes, int nr, int64_t b_begin, int64_t b_end,
                 PanelBlock* out) {
  constexpr int kBB = FmtTraits<F>::kBlockBytes, kQs = FmtTraits<F>::kQsOffset;
  constexpr int kGB = FmtTraits<F>::kGroupBlocks;
  const uint8_t* row[kPanel];
  for (int r = 0; r < kPanel; ++r) row[r] = base + std::min(r, nr - 1) * row_bytes;
  const __m512i idx_ab = PairIndex<0, 1, F == Fmt::kQ8_0>::Load();
  const __m512i idx_cd = PairIndex<2, 3, F == Fmt::kQ8_0>::Load();
  const __m512i nibble = _mm512_set1_epi32(0x000f000f);
  const __m512i eight = _mm512_set1_epi16(8);
  for (int64_t g0 = b_begin; g0 < b_end; g0 += kGB) {
    const int valid = static_cast<int>(std::min<int64_t>(kGB, b_end - g0));
    BlockScales scales[kGB];
    GroupScales<F>(row, g0 * kBB, valid, scales);
    for (int k = 0; k < valid; ++k) {
      const int64_t b = g0 + k;
      PanelBlock& o = out[b - b_begin];
      o.d = scales[k].d;
      o.m = scales[k].m;
      if constexpr (F == Fmt::kQ8_0) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          __m512i e[4];
          TransposeRowBytes(row, b * kBB + kQs + 16 * h, e);
#pragma GCC unroll 4
          for (int m = 0; m < 4; ++m) {
            o.w[8 * h + 2 * m] = _mm512_srai_epi16(_mm512_shuffle_epi8(e[m], idx_ab), 8);
            o.w[8 * h + 2 * m + 1] = _mm512_srai_epi16(_mm512_shuffle_epi8(e[m], idx_cd), 8);
          }
        }
      } else {
        __m512i e[4];
        TransposeRowBytes(row, b * kBB + kQs, e);
        const auto codes = [&](__m512i v) {
          v = _mm512_and_si512(v, nibble);
          return F == Fmt::kQ4_0 ? _mm512_sub_epi16(v, eight) : v;
        };
#pragma GCC unroll 4
        for (int m = 0; m < 4; ++m) {
          const __m512i ab = _mm512_shuffle_epi8(e[m], idx_ab);
          const __m512i cd = _mm512_shuffle_epi8(e[m], idx_cd);
          o.w[2 * m] = codes(ab);
          o.w[2 * m + 1] = codes(cd);
          o.w[2 * m + 8] = codes(_mm512_srli_epi32(ab, 4));
          o.w[2 * m + 9] = codes(_mm512_srli_epi32(cd, 4));
        }
      }
    }
  }
}

CLEAVE_ALWAYS_INLINE __m512i BroadcastPair(const int16_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return _mm512_set1_epi32(v);
}

// P panels (scratch panel[i] = blocks [b_begin, b_begin + num_blocks) expanded) x T tokens from
// t0; y[i] = the output of panel i's first row. The float accumulators start at 0 when first,
// else from y.
template <Fmt F, int P, int T>
void Tile(const PanelBlock* const* panel, int64_t b_begin, int64_t num_blocks,
          const BatchedActivations& xa, int64_t t0, float* const* y, const __mmask16* valid,
          int64_t rows_total, bool first) {
  const int16_t* xq[T];
  const float* dx[T];
  const float* sx[T];
  for (int t = 0; t < T; ++t) {
    xq[t] = xa.token(t0 + t) + 32 * b_begin;
    dx[t] = xa.scales.dx_of(t0 + t) + b_begin;
    sx[t] = xa.scales.sx_of(t0 + t) + b_begin;
  }
  __m512 acc[P][T];
#pragma GCC unroll 2
  for (int i = 0; i < P; ++i) {
#pragma GCC unroll 6
    for (int t = 0; t < T; ++t) {
      acc[i][t] = first ? _mm512_setzero_ps()
                        : _mm512_maskz_loadu_ps(valid[i], y[i] + (t0 + t) * rows_total);
    }
  }
  for (int64_t b = 0; b < num_blocks; ++b) {
    __m512i isum[P][T];
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p) {
      __m512i w[P];
#pragma GCC unroll 2
      for (int i = 0; i < P; ++i) w[i] = _mm512_load_si512(&panel[i][b].w[p]);
#pragma GCC unroll 6
      for (int t = 0; t < T; ++t) {
        const __m512i xb = BroadcastPair(xq[t] + 32 * b + 2 * p);
#pragma GCC unroll 2
        for (int i = 0; i < P; ++i) {
          isum[i][t] =
              p == 0 ? _mm512_madd_epi16(w[i], xb) : _mm512_dpwssd_epi32(isum[i][t], w[i], xb);
        }
      }
    }
#pragma GCC unroll 2
    for (int i = 0; i < P; ++i) {
      const __m512 d = _mm512_load_ps(reinterpret_cast<const float*>(&panel[i][b].d));
      const __m512 m = F == Fmt::kQ4_1
                           ? _mm512_load_ps(reinterpret_cast<const float*>(&panel[i][b].m))
                           : _mm512_setzero_ps();
#pragma GCC unroll 6
      for (int t = 0; t < T; ++t) {
        acc[i][t] = BlockStep<F>(isum[i][t], d, m, dx[t][b], sx[t][b], acc[i][t]);
      }
    }
  }
#pragma GCC unroll 2
  for (int i = 0; i < P; ++i) {
#pragma GCC unroll 6
    for (int t = 0; t < T; ++t) {
      _mm512_mask_storeu_ps(y[i] + (t0 + t) * rows_total, valid[i], acc[i][t]);
    }
  }
}

template <Fmt F, int P>
void AllTokens(const PanelBlock* const* panel, int64_t b_begin, int64_t num_blocks,
               const BatchedActivations& xa, int64_t num_tokens, float* const* y,
               const __mmask16* valid, int64_t rows_total, bool first) {
  int64_t t0 = 0;
  for (; t0 + kTokenTile <= num_tokens; t0 += kTokenTile) {
    Tile<F, P, kTokenTile>(panel, b_begin, num_blocks, xa, t0, y, valid, rows_total, first);
  }
  const auto tail = [&]<int T>() {
    Tile<F, P, T>(panel, b_begin, num_blocks, xa, t0, y, valid, rows_total, first);
  };
  switch (num_tokens - t0) {
    case 5:
      return tail.template operator()<5>();
    case 4:
      return tail.template operator()<4>();
    case 3:
      return tail.template operator()<3>();
    case 2:
      return tail.template operator()<2>();
    case 1:
      return tail.template operator()<1>();
    default:
      return;
  }
}

template <Fmt F>
void BatchedRows(const WeightView& w, const BatchedActivations& xa, int64_t num_tokens,
                 int64_t row_begin, int64_t row_end, float* y) {
  const int64_t num_blocks = w.cols / 32;
  constexpr int64_t kBlockBytes = FmtTraits<F>::kBlockBytes;
  const int64_t row_bytes = num_blocks * kBlockBytes;
  const auto* data = static_cast<const uint8_t*>(w.data);
  thread_local std::vector<PanelBlock> scratch;
  scratch.resize(kPanelsPerTile * kChunkBlocks);
  constexpr int64_t kTileRows = kPanelsPerTile * kPanel;
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kTileRows) {
    const int64_t tile_rows = std::min(kTileRows, row_end - r0);
    const int num_panels = static_cast<int>((tile_rows + kPanel - 1) / kPanel);
    const PanelBlock* panel[kPanelsPerTile];
    float* out[kPanelsPerTile];
    __mmask16 valid[kPanelsPerTile];
    int nr[kPanelsPerTile];
    for (int i = 0; i < num_panels; ++i) {
      nr[i] = static_cast<int>(std::min<int64_t>(kPanel, tile_rows - i * kPanel));
      panel[i] = scratch.data() + i * kChunkBlocks;
      out[i] = y + r0 + i * kPanel;
      valid[i] = static_cast<__mmask16>((1u << nr[i]) - 1);
    }
    for (int64_t b0 = 0; b0 < num_blocks; b0 += kChunkBlocks) {
      const int64_t b1 = std::min(num_blocks, b0 + kChunkBlocks);
      for (int i = 0; i < num_panels; ++i) {
        ExpandPanel<F>(data + (r0 + i * kPanel) * row_bytes, row_bytes, nr[i], b0, b1,
                       scratch.data() + i * kChunkBlocks);
      }
      // The next chunk (of this row tile, else the next tile's first) comes from memory while
      // the tokens run over this one.
      const bool last = b1 == num_blocks;
      const int64_t next_r0 = last ? r0 + kTileRows : r0;
      const int64_t next_b0 = last ? 0 : b1;
      const int64_t next_b1 = std::min(num_blocks, next_b0 + kChunkBlocks);
      const int64_t next_rows = std::min<int64_t>(kTileRows, row_end - next_r0);
      for (int64_t r = 0; r < next_rows; ++r) {
        const uint8_t* p = data + (next_r0 + r) * row_bytes;
        for (int64_t off = next_b0 * kBlockBytes; off < next_b1 * kBlockBytes; off += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(p + off), _MM_HINT_T0);
        }
        _mm_prefetch(reinterpret_cast<const char*>(p + next_b1 * kBlockBytes - 1), _MM_HINT_T0);
      }
      if (num_panels == 2) {
        AllTokens<F, 2>(panel, b0, b1 - b0, xa, num_tokens, out, valid, w.rows, b0 == 0);
      } else {
        AllTokens<F, 1>(panel, b0, b1 - b0, xa, num_tokens, out, valid, w.rows, b0 == 0);
      }
    }
  }
}

}  // namespace

template <Fmt F>
void RunBatched(std::span<const MatMulOutput> products, const float* x, int64_t num_tokens,
                ThreadPool& pool, QuantizeRowFn quantize_row) {
  // Named through a plain reference: inside the lambdas a thread_local would resolve to the
  // worker thread's own (empty) instance.
  thread_local BatchedActivations buffer;
  BatchedActivations& xa = buffer;
  const int64_t cols = products[0].w.cols;
  xa.num_blocks = cols / 32;
  xa.qs.resize(num_tokens * xa.num_blocks * 32);
  xa.scales.Resize(num_tokens, xa.num_blocks);
  pool.ParallelFor(num_tokens, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      QuantizeToken(quantize_row, x + t * cols, xa.num_blocks, xa.qs.data() + t * cols, xa.scales,
                    t);
    }
  });
  ForEachRowRange(products, pool, kPanelsPerTile * kPanel,
                  [&](const WeightView& w, int64_t lo, int64_t hi, float* y) {
                    BatchedRows<F>(w, xa, num_tokens, lo, hi, y);
                  });
}

template void RunBatched<Fmt::kQ4_0>(std::span<const MatMulOutput>, const float*, int64_t,
                                     ThreadPool&, QuantizeRowFn);
template void RunBatched<Fmt::kQ4_1>(std::span<const MatMulOutput>, const float*, int64_t,
                                     ThreadPool&, QuantizeRowFn);
template void RunBatched<Fmt::kQ8_0>(std::span<const MatMulOutput>, const float*, int64_t,
                                     ThreadPool&, QuantizeRowFn);

}  // namespace cleave::kernels::cpu::legacy
