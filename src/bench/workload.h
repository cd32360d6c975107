// Workloads: the prompts and output lengths a benchmark sends.
//
// Sources (see docs/benchmarking.md for formats and the published statistics):
//   sharegpt:FILE  the ShareGPT JSON that `vllm bench serve --dataset-name sharegpt` reads
//   jsonl:FILE     one {"prompt": str, "output_len": int} per line
//   trace:FILE     Mooncake trace, one {"timestamp": ms, "input_length": n, "output_length": n}
//                  per line; prompts are cut from the corpus, timestamps can drive arrivals
//   chatbot | code | summarization
//                  synthetic lengths after DistServe's three applications, text from the corpus
// Token counts come from a TokenCounter: the server's /tokenize when it has one (client.h),
// else an estimate of 4 characters per token.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bench/arrivals.h"
#include "core/status.h"

namespace cleave::bench {

struct WorkloadRequest {
  std::string prompt;
  int64_t prompt_tokens = 0;  // as counted when the workload was built
  int64_t output_tokens = 0;  // sent as max_tokens (with ignore_eos, the exact output length)
  double timestamp_s = -1;    // arrival offset from a trace; < 0 when the source has none
};

// Counts the tokens a text becomes. Two implementations: the estimate below and the server's
// /tokenize (HttpTokenCounter in client.h).
class TokenCounter {
 public:
  virtual ~TokenCounter() = default;
  // Number of tokens in `text`, without special tokens.
  virtual Result<int64_t> Count(std::string_view text) = 0;
  // Short description for the report ("server /tokenize", "estimate (4 chars/token)").
  virtual std::string name() const = 0;
};

// ceil(characters / 4): the usual rule of thumb for English with BPE vocabularies.
class CharEstimateCounter final : public TokenCounter {
 public:
  Result<int64_t> Count(std::string_view text) override;
  std::string name() const override { return "estimate (4 chars/token)"; }
};

// Plain English text that synthetic prompts are cut from. Treated as a ring of words, so a
// prompt may be longer than the corpus.
class Corpus {
 public:
  static Result<Corpus> Load(const std::string& path);
  static Corpus FromText(std::string text);

  size_t num_words() const { return words_.size(); }
  // The words [start, start + count) of the ring joined by single spaces.
  std::string Words(size_t start, size_t count) const;
  // Text starting at a random word whose token count is the largest <= target_tokens
  // (bisection on the word count). Sets *actual_tokens to that count.
  Result<std::string> Cut(int64_t target_tokens, TokenCounter& counter, Rng& rng,
                          int64_t* actual_tokens) const;

 private:
  std::shared_ptr<const std::string> text_;
  std::vector<std::string_view> words_;  // views into *text_
};

enum class SyntheticApp { kChatbot, kCode, kSummarization };

struct WorkloadOptions {
  int64_t num_prompts = 100;
  uint64_t seed = 0;
  double length_scale = 1.0;        // multiplies synthetic and trace lengths (small CPU setups)
  int64_t output_len_override = 0;  // > 0: every request asks for exactly this many tokens
  std::string corpus_path;          // for synthetic and trace workloads
};

// Input/output token lengths for a synthetic application (before length_scale).
struct LengthPair {
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
};
LengthPair SampleLengths(SyntheticApp app, Rng& rng);
// max(1, round(n * scale)): how --length-scale shrinks a length.
int64_t ScaleLength(int64_t n, double scale);
Result<SyntheticApp> ParseSyntheticApp(std::string_view name);

// Parsers. Each fails with a message naming the file, and the line or entry, that is wrong.
Result<std::vector<WorkloadRequest>> LoadShareGpt(const std::string& path,
                                                  const WorkloadOptions& options,
                                                  TokenCounter& counter);
Result<std::vector<WorkloadRequest>> LoadJsonl(const std::string& path,
                                               const WorkloadOptions& options,
                                               TokenCounter& counter);
Result<std::vector<WorkloadRequest>> LoadTrace(const std::string& path,
                                               const WorkloadOptions& options, const Corpus& corpus,
                                               TokenCounter& counter);
Result<std::vector<WorkloadRequest>> MakeSynthetic(SyntheticApp app, const WorkloadOptions& options,
                                                   const Corpus& corpus, TokenCounter& counter);

// Dispatches on a --workload spec: "chatbot", "sharegpt:FILE", "jsonl:FILE", "trace:FILE".
Result<std::vector<WorkloadRequest>> LoadWorkload(std::string_view spec,
                                                  const WorkloadOptions& options,
                                                  TokenCounter& counter);

}  // namespace cleave::bench
