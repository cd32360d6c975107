// Qwen2 / Qwen2.5: Llama's block with biases on Q, K and V, and NeoX-style RoPE (rotating
// (i, i + d/2) pairs, since its Q/K rows are stored unpermuted).
#include "model/architecture.h"

namespace cleave::arch {

const Architecture kQwen2 = {
    .name = "qwen2",
    .rope_neox = true,
    .requires_qkv_bias = true,
    .tensors = {},
};

}  // namespace cleave::arch
