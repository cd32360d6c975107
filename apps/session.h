// One conversation with a model on this thread, for `cleave generate` and `cleave chat`: a
// contiguous KV cache that keeps the tokens of earlier turns, so a follow-up only computes what
// is new. (Many concurrent requests go through the engine instead: src/engine/engine.h.)
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "engine/sampler.h"
#include "model/model.h"

namespace cleave::app {

struct GenerationStats {
  int64_t prompt_tokens = 0;  // computed this call (excludes reused cache)
  int64_t generated_tokens = 0;
  double prompt_seconds = 0;
  double generate_seconds = 0;
  std::string finish_reason;  // "stop" or "length"
};

class Session {
 public:
  Session(Model& model, int num_threads, int64_t context_tokens);

  // Continues the cached token sequence with `prompt` (the whole conversation so far; its common
  // prefix with the cache is reused), then samples up to params.max_tokens tokens, calling
  // on_text with each UTF-8-complete piece of text.
  Result<GenerationStats> Generate(const std::vector<TokenId>& prompt, const SamplingParams& params,
                                   Rng& rng,
                                   const std::function<void(const std::string&)>& on_text);
  const std::vector<TokenId>& tokens() const { return tokens_; }

 private:
  Model& model_;
  ThreadPool pool_;
  int64_t context_tokens_;
  KvCache cache_;
  std::vector<int32_t> block_table_;
  std::vector<TokenId> tokens_;  // tokens whose KV is in cache_
  Sampler sampler_;
};

}  // namespace cleave::app
