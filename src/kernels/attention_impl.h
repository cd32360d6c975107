// The paged attention loop shared by the per-ISA translation units (attention.cc for the scalar
// reference, attention_avx2.cc, attention_avx512.cc). Each includes this header and instantiates
// AttendImpl with its own row operations; everything here has internal linkage so that code
// compiled with different ISA flags is never merged by the linker.
#pragma once

#include <cmath>
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

template <class Ops, DType D>
void AttendTyped(const PagedKv& k, const PagedKv& v, const AttentionHead& a) {
  const int64_t head_bytes = KvHeadBytes(D, a.head_dim);
  const int64_t bs = k.block_size, n = a.num_positions, hd = a.head_dim, heads = a.num_heads;
  // Row of position p in one layer's K or V storage.
  const auto row = [&](const PagedKv& kv, int64_t p) {
    return kv.data + (a.block_table[p / bs] * bs + p % bs) * kv.slot_bytes + a.kv_head * head_bytes;
  };
  // The rows of a decode step's positions are rarely still cached (a forward pass streams all
  // the weights between two visits of a layer), and one position's work is short, so the loads
  // are prefetched: keys kAhead positions ahead, and each value row while its key is read.
  constexpr int64_t kAhead = 8;
  for (int64_t p = 0; p < n && p < kAhead; ++p) PrefetchRow(row(k, p), head_bytes);
  // Per head h: scores[h * n + p], running max max_score[h]. A key row, once loaded for the
  // first head, is in L1 for the others.
  constexpr int64_t kMaxGroup = 16;
  CLEAVE_CHECK(heads >= 1 && heads <= kMaxGroup, "attention: {} heads per KV head", heads);
  float max_score[kMaxGroup];
  for (int64_t h = 0; h < heads; ++h) max_score[h] = -INFINITY;
  for (int64_t p = 0; p < n; ++p) {
    if (p + kAhead < n) PrefetchRow(row(k, p + kAhead), head_bytes);
    PrefetchRow(row(v, p), head_bytes);
    const uint8_t* k_row = row(k, p);
    for (int64_t h = 0; h < heads; ++h) {
      const float score = a.scale * Ops::template Dot<D>(a.q + h * hd, k_row, hd);
      a.scores[h * n + p] = score;
      if (score > max_score[h]) max_score[h] = score;
    }
  }
  float sum[kMaxGroup];
  for (int64_t h = 0; h < heads; ++h) {
    float* scores = a.scores + h * n;
    sum[h] = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      scores[j] = std::exp(scores[j] - max_score[h]);
      sum[h] += scores[j];
    }
    for (int64_t d = 0; d < hd; ++d) a.out[h * hd + d] = 0.0f;
  }
  for (int64_t p = 0; p < n; ++p) {
    const uint8_t* v_row = row(v, p);
    for (int64_t h = 0; h < heads; ++h) {
      Ops::template Axpy<D>(a.scores[h * n + p], v_row, hd, a.out + h * hd);
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
