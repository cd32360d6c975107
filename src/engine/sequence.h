// Sequence: one request's state inside a worker, as the scheduler sees it.
//
// There are no prefill or decode phases. A sequence knows num_tokens() tokens (prompt, then
// output) and has KV computed for the first num_computed_tokens of them; each step the scheduler
// grants some of the gap. A fresh prompt has a large gap (prefill, possibly in chunks), a
// running sequence that just sampled has a gap of 1 (decode), a prefix-cache hit or KV shipped
// from a prefill worker starts with num_computed_tokens > 0, and a preempted sequence drops back
// to 0 and recomputes prompt and output alike.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "engine/block_pool.h"
#include "engine/sampler.h"

namespace cleave {

using RequestId = uint64_t;

enum class SequenceStatus {
  kWaiting,    // not yet admitted
  kRunning,    // holds blocks and is scheduled each step
  kPreempted,  // lost its blocks; waits to be recomputed
  kFinished,
};

enum class FinishReason {
  kNone,
  kStop,       // EOG token, stop token id or stop string
  kLength,     // max_tokens or the model's context length
  kCancelled,  // the caller cancelled
  kCapacity,   // needs more KV blocks than the whole cache holds
  kError,      // the executor failed
};

std::string_view FinishReasonName(FinishReason reason);  // "stop", "length", ...
std::string_view SequenceStatusName(SequenceStatus status);

class Sequence {
 public:
  Sequence(RequestId id, std::vector<TokenId> prompt, SamplingParams params, int32_t priority,
           uint64_t arrival_order, double arrival_time_s);

  RequestId id() const { return id_; }
  const SamplingParams& params() const { return params_; }
  // Lower values are served first and preempted last (vLLM's convention); FCFS within a value.
  int32_t priority() const { return priority_; }
  uint64_t arrival_order() const { return arrival_order_; }  // tie-break: smaller is older
  double arrival_time_s() const { return arrival_time_s_; }

  // Tokens known: the prompt followed by the output.
  std::span<const TokenId> tokens() const { return tokens_; }
  std::span<const TokenId> prompt() const { return {tokens_.data(), size_t(num_prompt_tokens_)}; }
  std::span<const TokenId> output() const {
    return std::span<const TokenId>(tokens_).subspan(num_prompt_tokens_);
  }
  int32_t num_tokens() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t num_prompt_tokens() const { return num_prompt_tokens_; }
  int32_t num_output_tokens() const { return num_tokens() - num_prompt_tokens_; }
  TokenId last_token() const { return tokens_.back(); }
  void AppendToken(TokenId token) { tokens_.push_back(token); }

  // KV exists for tokens [0, num_computed_tokens) in block_table's blocks.
  int32_t num_computed_tokens = 0;
  std::vector<BlockId> block_table;
  // Chain hashes of the first block_hashes.size() full blocks, which are registered with the
  // pool's prefix cache (or would be, if caching is off).
  std::vector<BlockHash> block_hashes;

  SequenceStatus status = SequenceStatus::kWaiting;
  FinishReason finish_reason = FinishReason::kNone;
  int32_t num_preemptions = 0;
  int32_t num_cached_prompt_tokens = 0;  // prefix-cache hit on first admission

  // Per-token timing, seconds on the engine's clock.
  double first_scheduled_time_s = -1;
  std::vector<double> token_times_s;  // one per output token, when it was sampled

  Rng rng;  // this sequence's sampling RNG

 private:
  RequestId id_;
  SamplingParams params_;
  int32_t priority_;
  uint64_t arrival_order_;
  double arrival_time_s_;
  std::vector<TokenId> tokens_;
  int32_t num_prompt_tokens_;
};

}  // namespace cleave
