// Sampler: turns one row of logits into the next token, per request parameters.
//
// Order of processing (as vLLM v1): logit bias and min_tokens masking, then penalties
// (repetition over prompt+output; presence and frequency over output only), then either greedy
// argmax (temperature 0) or temperature scaling, min-p, top-k, top-p and a draw from the
// request's own RNG. The draw for output token n is a pure function of (the sequence's seed, n),
// so a seeded request gives the same tokens whatever else is in the batch, after a preemption
// (recompute), and when a decode worker continues a prompt that a prefill worker started.
//
// Logprobs are reported by default from the raw logits (before any processing), which is vLLM
// v1's default `logprobs_mode=raw_logprobs` and what OpenAI documents; LogprobsMode::kProcessed
// reports them from the logits as sampled (after penalties, temperature and truncation, with
// truncated tokens at -inf).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "model/tokenizer.h"

namespace cleave {

enum class LogprobsMode { kRaw, kProcessed };

struct SamplingParams {
  float temperature = 1.0f;         // <= 1e-5 means greedy
  int32_t top_k = 0;                // <= 0: off
  float top_p = 1.0f;               // 1: off
  float min_p = 0.0f;               // 0: off
  float repetition_penalty = 1.0f;  // 1: off; > 1 discourages tokens seen in prompt or output
  float presence_penalty = 0.0f;    // subtracted once from tokens seen in the output
  float frequency_penalty = 0.0f;   // subtracted per occurrence in the output
  std::vector<std::pair<TokenId, float>> logit_bias;  // added to the raw logits
  std::optional<uint64_t> seed;                       // unset: the engine draws one
  int32_t max_tokens = 16;                            // output tokens; vLLM's default
  int32_t min_tokens = 0;   // EOG and stop_token_ids are masked until reached
  bool ignore_eos = false;  // do not stop at EOG tokens (they are still sampled)
  std::vector<TokenId> stop_token_ids;
  std::vector<std::string> stop;  // stop strings: matched in the text, never emitted
  int32_t logprobs = -1;          // -1: none; k >= 0: the chosen token plus k alternatives
  LogprobsMode logprobs_mode = LogprobsMode::kRaw;
  bool skip_special_tokens = true;  // detokenization

  bool greedy() const { return temperature <= 1e-5f; }
};

// xoshiro256** seeded through splitmix64: small, fast, and the same on every platform
// (std::uniform_real_distribution is not).
class Rng {
 public:
  explicit Rng(uint64_t seed = 0);
  uint64_t Next();
  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  // Uniform in [0, 1) for draw number `step` of this seed's stream; depends on (seed, step)
  // only, not on how many values were drawn before. The sampler uses the output position.
  double UniformAt(uint64_t step) const;
  uint64_t seed() const { return seed_; }

 private:
  uint64_t seed_;
  uint64_t s_[4];
};

struct TokenLogprob {
  TokenId token = -1;
  float logprob = 0.0f;
};

struct SampleResult {
  TokenId token = -1;
  float logprob = 0.0f;           // of token; only when params.logprobs >= 0
  std::vector<TokenLogprob> top;  // params.logprobs alternatives, best first (ties: lower id)
};

// One row's processing steps, exposed for tests. All work in place on logits [vocab].
namespace sampling {
void ApplyLogitBias(std::span<float> logits, const SamplingParams& params);
// Masks (sets to -inf) params.stop_token_ids, and `eog_ids` unless ignore_eos, while
// num_output < min_tokens.
void ApplyMinTokens(std::span<float> logits, const SamplingParams& params, int32_t num_output,
                    std::span<const TokenId> eog_ids);
void ApplyPenalties(std::span<float> logits, const SamplingParams& params,
                    std::span<const TokenId> prompt, std::span<const TokenId> output);
// Index of the largest value; ties break to the lowest index.
TokenId Argmax(std::span<const float> logits);
// Divides by temperature, then masks to -inf every token outside min-p, top-k and top-p (in
// that order; top-p is taken over the distribution renormalised after min-p and top-k). At least
// the most likely token always survives.
void ApplyTemperatureAndTruncation(std::span<float> logits, const SamplingParams& params);
// The first id whose running sum of prob (ids ascending) exceeds target: an inverse-CDF draw
// when target = u * sum(prob), u in [0, 1). Ids with prob 0 are never chosen; if rounding
// leaves the sum at or below target, the last id with mass. -1 when no id has mass.
TokenId InverseCdf(std::span<const float> prob, double target);
// log-softmax of logits into out (same size); -inf stays -inf.
void LogSoftmax(std::span<const float> logits, std::span<float> out);
// The k best (logprob, then lower id) of a log-softmax row.
std::vector<TokenLogprob> TopLogprobs(std::span<const float> logprobs, int32_t k);
}  // namespace sampling

// Stateless apart from the EOG ids; safe to share across threads.
class Sampler {
 public:
  explicit Sampler(std::vector<TokenId> eog_ids) : eog_ids_(std::move(eog_ids)) {}

  // Samples the next token for one sequence. logits [vocab] is used as scratch and left
  // processed. prompt/output are the sequence's tokens so far (for penalties and min_tokens).
  SampleResult Sample(std::span<float> logits, const SamplingParams& params,
                      std::span<const TokenId> prompt, std::span<const TokenId> output,
                      Rng& rng) const;

  const std::vector<TokenId>& eog_ids() const { return eog_ids_; }

 private:
  std::vector<TokenId> eog_ids_;
};

}  // namespace cleave
