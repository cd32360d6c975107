#include "apps/session.h"

#include <algorithm>
#include <numeric>

namespace cleave::app {
namespace {
constexpr int64_t kBlockSize = 16;
double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}
}  // namespace

Session::Session(Model& model, int num_threads, int64_t context_tokens)
    : model_(model),
      pool_(num_threads),
      context_tokens_(context_tokens),
      cache_(model.MakeKvCache((context_tokens + kBlockSize - 1) / kBlockSize, kBlockSize)),
      block_table_(cache_.num_blocks()),
      sampler_(model.tokenizer().eog_ids()) {
  std::iota(block_table_.begin(), block_table_.end(), 0);
}

Result<GenerationStats> Session::Generate(const std::vector<TokenId>& prompt,
                                          const SamplingParams& params, Rng& rng,
                                          const std::function<void(const std::string&)>& on_text) {
  if (prompt.empty()) return InvalidArgument("the prompt is empty");
  const int64_t needed = static_cast<int64_t>(prompt.size()) + params.max_tokens;
  if (needed > context_tokens_) {
    return InvalidArgument(
        "prompt ({} tokens) plus max tokens ({}) exceeds the context of {} tokens", prompt.size(),
        params.max_tokens, context_tokens_);
  }
  // Reuse the longest common prefix, but always compute at least the last prompt token.
  size_t reuse = 0;
  while (reuse < tokens_.size() && reuse < prompt.size() && tokens_[reuse] == prompt[reuse])
    ++reuse;
  reuse = std::min(reuse, prompt.size() - 1);
  tokens_.assign(prompt.begin(), prompt.end());

  GenerationStats stats;
  std::vector<float> logits;
  auto start = std::chrono::steady_clock::now();
  ForwardItem item{std::span<const TokenId>(prompt).subspan(reuse), static_cast<int64_t>(reuse),
                   block_table_, LogitsMode::kLast};
  CLEAVE_RETURN_IF_ERROR(model_.Forward({&item, 1}, cache_, pool_, &logits));
  stats.prompt_tokens = static_cast<int64_t>(prompt.size() - reuse);
  stats.prompt_seconds = Seconds(start);

  start = std::chrono::steady_clock::now();
  IncrementalDecoder decoder(model_.tokenizer());
  std::vector<TokenId> output;
  stats.finish_reason = "length";
  for (int32_t i = 0; i < params.max_tokens; ++i) {
    SampleResult sample = sampler_.Sample(logits, params, prompt, output, rng);
    const TokenId token = sample.token;
    const bool stop_token = std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(),
                                      token) != params.stop_token_ids.end();
    if ((!params.ignore_eos && model_.tokenizer().IsEog(token)) || stop_token) {
      stats.finish_reason = "stop";
      break;
    }
    output.push_back(token);
    on_text(decoder.Push(token));
    if (i + 1 == params.max_tokens) break;  // its logits would go unused
    ForwardItem step{std::span<const TokenId>(&output.back(), 1),
                     static_cast<int64_t>(tokens_.size()), block_table_, LogitsMode::kLast};
    CLEAVE_RETURN_IF_ERROR(model_.Forward({&step, 1}, cache_, pool_, &logits));
    tokens_.push_back(token);
  }
  on_text(decoder.Flush());
  stats.generated_tokens = static_cast<int64_t>(output.size());
  stats.generate_seconds = Seconds(start);
  return stats;
}

}  // namespace cleave::app
