#include "model/kv_cache.h"

namespace cleave {

KvCache::KvCache(int64_t num_layers, int64_t num_blocks, int64_t block_size, int64_t num_kv_heads,
                 int64_t head_dim)
    : num_layers_(num_layers),
      num_blocks_(num_blocks),
      block_size_(block_size),
      token_stride_(num_kv_heads * head_dim),
      k_(num_layers),
      v_(num_layers) {
  CLEAVE_CHECK(num_layers > 0 && num_blocks > 0 && block_size > 0 && token_stride_ > 0);
  const size_t per_layer = static_cast<size_t>(num_blocks * block_size * token_stride_);
  for (int64_t l = 0; l < num_layers; ++l) {
    k_[l].assign(per_layer, 0.0f);
    v_[l].assign(per_layer, 0.0f);
  }
}

int64_t KvCache::bytes() const {
  return 2 * num_layers_ * num_blocks_ * block_size_ * token_stride_ * int64_t{sizeof(float)};
}

}  // namespace cleave
