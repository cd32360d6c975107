// Llama family as llama.cpp's converters store it: Llama 2/3, SmolLM/SmolLM2 and Mistral all use
// `general.architecture = llama`. The converter permutes Q/K rows so that RoPE rotates adjacent
// pairs (2i, 2i + 1).
#include "model/architecture.h"

namespace cleave::arch {

const Architecture kLlama = {
    .name = "llama",
    .rope_neox = false,
    .requires_qkv_bias = false,
    .tensors = {},
};

}  // namespace cleave::arch
