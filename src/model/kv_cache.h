// Paged KV storage for one worker: the model reads and writes keys and values through per-sequence
// block tables; which block belongs to which sequence is decided by the engine's block pool.
//
// Memory layout, per layer, for K and for V alike (F32 for now):
//
//   block 0                          block 1
//   +--------------------------------+--------------------------------+--
//   | slot 0: [kv_heads][head_dim]   | slot 0: ...                    |
//   | slot 1: [kv_heads][head_dim]   |                                |
//   | ... block_size slots           |                                |
//   +--------------------------------+--------------------------------+--
//
// Token position p of a sequence lives in block block_table[p / block_size], slot p % block_size.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace cleave {

class KvCache {
 public:
  KvCache(int64_t num_layers, int64_t num_blocks, int64_t block_size, int64_t num_kv_heads,
          int64_t head_dim);

  int64_t num_layers() const { return num_layers_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  int64_t token_stride() const { return token_stride_; }  // floats per slot: kv_heads * head_dim
  int64_t bytes() const;

  // Start of the slot for `slot` in `block` of `layer`: [kv_heads][head_dim] floats.
  float* K(int64_t layer, int64_t block, int64_t slot) { return k_[layer].data() + Offset(block, slot); }
  float* V(int64_t layer, int64_t block, int64_t slot) { return v_[layer].data() + Offset(block, slot); }
  const float* K(int64_t layer, int64_t block, int64_t slot) const {
    return k_[layer].data() + Offset(block, slot);
  }
  const float* V(int64_t layer, int64_t block, int64_t slot) const {
    return v_[layer].data() + Offset(block, slot);
  }

 private:
  int64_t Offset(int64_t block, int64_t slot) const {
    return (block * block_size_ + slot) * token_stride_;
  }
  int64_t num_layers_, num_blocks_, block_size_, token_stride_;
  std::vector<std::vector<float>> k_, v_;  // [layer][num_blocks * block_size * token_stride]
};

}  // namespace cleave
