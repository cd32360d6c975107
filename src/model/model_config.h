// Hyper-parameters of a decoder-only transformer, read from GGUF metadata
// (`<arch>.block_count`, `<arch>.attention.head_count`, ...).
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"
#include "model/architecture.h"

namespace cleave::gguf {
class GgufFile;
}

namespace cleave {

enum class RopeScaling { kNone, kLinear };

struct ModelConfig {
  const Architecture* arch = nullptr;
  std::string name;  // general.name, or the file name
  int64_t num_layers = 0;
  int64_t hidden = 0;  // embedding length
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // hidden / num_heads unless the file says otherwise
  int64_t ffn_hidden = 0;
  int64_t vocab_size = 0;
  int64_t context_length = 0;
  float rms_norm_eps = 1e-5f;
  float rope_freq_base = 10000.0f;
  RopeScaling rope_scaling = RopeScaling::kNone;
  float rope_freq_scale = 1.0f;  // positions are multiplied by this (1 / linear factor)

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  // Checks the numbers are positive and consistent (heads divide, head_dim even, ...).
  Status Validate() const;
};

// Reads and validates the configuration; Unimplemented for an unsupported architecture or
// feature, naming it.
Result<ModelConfig> ReadModelConfig(const gguf::GgufFile& file);

}  // namespace cleave
