// Attention of one query head over a sequence's keys and values in a paged KV cache, with the
// keys and values stored as F32, F16 or Q8_0 and converted as they are read.
//
// One layer's K (or V) is a contiguous array of token slots, block_size slots per block:
//
//   slot row (slot_bytes):  | kv head 0: head_dim elements | kv head 1 | ... |
//   F32 / F16: plain elements; Q8_0: GGUF blocks of 32 (f16 scale d, 32 x int8 q; x = d * q),
//   so a head of head_dim elements is head_dim / 32 whole blocks (head_dim % 32 == 0).
//
// Position p of a sequence is slot p % block_size of block block_table[p / block_size].
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/status.h"
#include "kernels/cpu/dispatch.h"

namespace cleave::kernels {

// One layer's K or V storage.
struct PagedKv {
  DType dtype = DType::kF32;      // kF32, kF16 or kQ8_0
  const uint8_t* data = nullptr;  // [num_blocks][block_size][slot_bytes]
  int64_t block_size = 0;
  int64_t slot_bytes = 0;
};

// One token's query heads that share a KV head (a GQA group, or one head): each key and value
// row is read once for all of them. Every head's output is bit-identical to a call with that
// head alone (num_heads = 1): the same operations in the same order.
struct AttentionHead {
  const float* q = nullptr;              // [num_heads][head_dim], the token's queries
  const int32_t* block_table = nullptr;  // covers positions [0, num_positions)
  int64_t num_positions = 0;             // attends over positions [0, num_positions), >= 1
  int64_t kv_head = 0;                   // which KV head of each slot row
  int64_t head_dim = 0;
  float scale = 1.0f;       // applied to q·k before the softmax
  float* scores = nullptr;  // scratch of num_heads * num_positions floats
  float* out = nullptr;     // [num_heads][head_dim] = softmax(scale q·K) V per head
  int64_t num_heads = 1;    // query heads in q and out, >= 1
};

// Whether dtype can store a KV head of head_dim elements (error names the constraint).
Status CheckKvDType(DType dtype, int64_t head_dim);
// Bytes one KV head of head_dim elements takes in dtype (CheckKvDType must pass).
int64_t KvHeadBytes(DType dtype, int64_t head_dim);

// Computes a.out using the active ISA (cpu::ActiveIsa()).
void PagedAttention(const PagedKv& k, const PagedKv& v, const AttentionHead& a);
// The same with a chosen ISA, which must be supported (for tests and benchmarks).
void PagedAttentionWith(cpu::Isa isa, const PagedKv& k, const PagedKv& v, const AttentionHead& a);

}  // namespace cleave::kernels
