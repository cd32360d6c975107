// The paged attention loop shared by the per-ISA translation units (attention.cc for the scalar
// reference, attention_avx2.cc, attention_avx512.cc). Each includes this header and instantiates
// AttendImpl with its own row operations; everything here has internal linkage so that code
// compiled with different ISA flags is never merged by the linker.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstring>

#include "core/fp16.h"
#include "kernels/attention.h"

namespace cleave::kernels {

void PagedAttentionScalar(const PagedKv& k, const PagedKv& v, const AttentionHead& a);
void PagedAttentionAvx2(const PagedKv& k, const PagedKv& v, const AttentionHead& a);
void PagedAttentionAvx512(const PagedKv& k, const PagedKv& v, const AttentionHead& a);

namespace {

// The f16 scale at the start of a Q8_0 KV block.
inline float BlockScale(const uint8_t* block) {
  uint16_t d;
  std::memcpy(&d, block, 2);
  return Fp16ToFp32(d);
}

// Ops provides, for each KV dtype D:
//   static float Dot<D>(const float* q, const uint8_t* row, int64_t n)   q · row
//   static void Axpy<D>(float w, const uint8_t* row, int64_t n, float* y)  y += w * row
// Prefetches the cache lines of one KV head row (GCC builtin: portable, no ISA flags).
inline void PrefetchRow(const uint8_t* row, int64_t bytes) {
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(row + off);
  __builtin_prefetch(row + bytes - 1);
}

// Ops may also provide
//   static void Dot4<D>(const float* q, const uint8_t* const* rows, int64_t n, float* out)
// (out[j] = q · rows[j] for j < 4, one horizontal reduction for the four). Keys are then
// scored four slots at a time from the start of each block and the block's remaining slots one
// at a time: which slots go in fours depends only on the block size and the token's position,
// never on the batch, so outputs stay batch-invariant.
template <class Ops, DType D>
concept HasDot4 = requires(const float* q, const uint8_t* const* rows, int64_t n, float* out) {
  Ops::template Dot4<D>(q, rows, n, out);
};

// Ops may also provide
//   static void Axpy4<D>(const float* w, const uint8_t* const* rows, int64_t n, float* y)
// (y += w[j] rows[j] for j = 0..3 in that order, bit-identical to four Axpy calls).
template <class Ops, DType D>
concept HasAxpy4 = requires(const float* w, const uint8_t* const* rows, int64_t n, float* y) {
  Ops::template Axpy4<D>(w, rows, n, y);
};

// Ops may also provide
//   static float ExpSum(float* x, int64_t n, float max)
// (x[i] = exp(x[i] - max) for i < n, returning their sum); std::exp one value at a time
// otherwise.
template <class Ops>
concept HasExpSum = requires(float* x, int64_t n, float max) {
  { Ops::ExpSum(x, n, max) } -> std::same_as<float>;
};

template <class Ops, DType D>
void AttendTyped(const PagedKv& k, const PagedKv& v, const AttentionHead& a) {
  const int64_t head_bytes = KvHeadBytes(D, a.head_dim);
  const int64_t bs = k.block_size, n = a.num_positions, hd = a.head_dim, heads = a.num_heads;
  const auto block_base = [&](const PagedKv& kv, int64_t b) {
    return kv.data + a.block_table[b] * bs * kv.slot_bytes + a.kv_head * head_bytes;
  };
  // The rows of a decode step's positions are rarely still cached (a forward pass streams all
  // the weights between two visits of a layer), and one position's work is short, so the loads
  // are prefetched: a block's value rows and the next block's key rows while its keys are read.
  for (int64_t s = 0; s < std::min(n, bs); ++s) {
    PrefetchRow(block_base(k, 0) + s * k.slot_bytes, head_bytes);
  }
  // Per head h: scores[h * n + p], running max max_score[h]. A key row, once loaded for the
  // first head, is in L1 for the others.
  constexpr int64_t kMaxGroup = 16;
  CLEAVE_CHECK(heads >= 1 && heads <= kMaxGroup, "attention: {} heads per KV head", heads);
  float max_score[kMaxGroup];
  for (int64_t h = 0; h < heads; ++h) max_score[h] = -INFINITY;
  const auto score = [&](int64_t h, int64_t p, float dot) {
    const float value = a.scale * dot;
    a.scores[h * n + p] = value;
    if (value > max_score[h]) max_score[h] = value;
  };
  for (int64_t first = 0, b = 0; first < n; first += bs, ++b) {
    const int64_t count = n - first < bs ? n - first : bs;
    const uint8_t* k_base = block_base(k, b);
    const uint8_t* v_base = block_base(v, b);
    if (first + bs < n) {
      const uint8_t* next = block_base(k, b + 1);
      const int64_t next_count = std::min(n - first - bs, bs);
      for (int64_t s = 0; s < next_count; ++s) PrefetchRow(next + s * k.slot_bytes, head_bytes);
    }
    for (int64_t s = 0; s < count; ++s) PrefetchRow(v_base + s * v.slot_bytes, head_bytes);
    int64_t s = 0;
    if constexpr (HasDot4<Ops, D>) {
      for (; s + 4 <= count; s += 4) {
        const uint8_t* rows[4];
        for (int j = 0; j < 4; ++j) rows[j] = k_base + (s + j) * k.slot_bytes;
        for (int64_t h = 0; h < heads; ++h) {
          float dots[4];
          Ops::template Dot4<D>(a.q + h * hd, rows, hd, dots);
          for (int j = 0; j < 4; ++j) score(h, first + s + j, dots[j]);
        }
      }
    }
    for (; s < count; ++s) {
      const uint8_t* k_row = k_base + s * k.slot_bytes;
      for (int64_t h = 0; h < heads; ++h) {
        score(h, first + s, Ops::template Dot<D>(a.q + h * hd, k_row, hd));
      }
    }
  }
  float sum[kMaxGroup];
  for (int64_t h = 0; h < heads; ++h) {
    float* scores = a.scores + h * n;
    if constexpr (HasExpSum<Ops>) {
      sum[h] = Ops::ExpSum(scores, n, max_score[h]);
    } else {
      float total = 0.0f;
      for (int64_t j = 0; j < n; ++j) {
        scores[j] = std::exp(scores[j] - max_score[h]);
        total += scores[j];
      }
      sum[h] = total;
    }
    for (int64_t d = 0; d < hd; ++d) a.out[h * hd + d] = 0.0f;
  }
  for (int64_t first = 0, b = 0; first < n; first += bs, ++b) {
    const int64_t count = n - first < bs ? n - first : bs;
    const uint8_t* v_base = block_base(v, b);
    int64_t s = 0;
    if constexpr (HasAxpy4<Ops, D>) {
      for (; s + 4 <= count; s += 4) {
        const uint8_t* rows[4];
        for (int j = 0; j < 4; ++j) rows[j] = v_base + (s + j) * v.slot_bytes;
        for (int64_t h = 0; h < heads; ++h) {
          Ops::template Axpy4<D>(a.scores + h * n + first + s, rows, hd, a.out + h * hd);
        }
      }
    }
    for (; s < count; ++s) {
      const uint8_t* v_row = v_base + s * v.slot_bytes;
      for (int64_t h = 0; h < heads; ++h) {
        Ops::template Axpy<D>(a.scores[h * n + first + s], v_row, hd, a.out + h * hd);
      }
    }
  }
  for (int64_t h = 0; h < heads; ++h) {
    const float inv = 1.0f / sum[h];
    for (int64_t d = 0; d < hd; ++d) a.out[h * hd + d] *= inv;
  }
}

template <class Ops>
void AttendImpl(const PagedKv& k, const PagedKv& v, const AttentionHead& a) {
  CLEAVE_CHECK(k.dtype == v.dtype && k.block_size == v.block_size && a.num_positions > 0);
  switch (k.dtype) {
    case DType::kF32:
      return AttendTyped<Ops, DType::kF32>(k, v, a);
    case DType::kF16:
      return AttendTyped<Ops, DType::kF16>(k, v, a);
    case DType::kQ8_0:
      return AttendTyped<Ops, DType::kQ8_0>(k, v, a);
    default:
      CLEAVE_CHECK(false, "KV dtype {} is not supported", DTypeName(k.dtype));
  }
}

}  // namespace
}  // namespace cleave::kernels
