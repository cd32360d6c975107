// Runs the independent numpy reference (tests/reference/llama_reference.py) on a model and a
// token sequence, for tests that compare cleave's forward pass with it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace cleave::testing {

struct ReferenceRun {
  int64_t num_tokens = 0;
  int64_t vocab = 0;
  std::vector<float> logits;    // [num_tokens, vocab]
  std::vector<int32_t> greedy;  // greedy continuation
};

// FailedPrecondition if the reference environment (.venv) is missing.
Result<ReferenceRun> RunLlamaReference(const std::string& model_path,
                                       const std::vector<int32_t>& tokens, int greedy_tokens);

}  // namespace cleave::testing
