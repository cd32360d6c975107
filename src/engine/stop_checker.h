// StopChecker: decides when a sequence stops and which text is safe to stream.
//
// Token-level stops (EOG unless ignore_eos, stop_token_ids, max_tokens) are checked per sampled
// token. Stop strings are matched in the detokenized text, across token boundaries: text that
// could still turn out to be the start of a stop string is held back until the next delta
// decides, and a matched stop string (and anything after it) is never emitted.
//
// Thread-safety: none; one per sequence.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/sampler.h"
#include "engine/sequence.h"

namespace cleave {

class StopChecker {
 public:
  // eog_ids: the tokenizer's end-of-generation ids.
  StopChecker(const SamplingParams& params, std::vector<TokenId> eog_ids);

  // Checks a token just appended as output token number num_output (1-based count after
  // appending). Returns kStop for EOG (unless ignore_eos) or a stop token id, kLength once
  // max_tokens is reached, nothing otherwise. A stop token's text should not be emitted.
  std::optional<FinishReason> CheckToken(TokenId token, int32_t num_output) const;
  // True if `token` is a stop token (EOG or stop id) whose text is dropped.
  bool IsStopToken(TokenId token) const;

  struct TextResult {
    std::string emit;      // safe to stream now
    bool stopped = false;  // a stop string matched; emit holds the text before it
    std::string stop_string;
  };
  // Consumes the next text delta (complete UTF-8 from IncrementalDecoder).
  TextResult PushText(std::string_view delta);
  // At the end of generation (for any other reason): the held-back text, which can no longer
  // become a stop string.
  std::string Flush();

  bool has_stop_strings() const { return !stop_strings_.empty(); }

 private:
  SamplingParams params_;  // a copy: the checker may outlive the sequence
  std::vector<TokenId> eog_ids_;
  std::vector<std::string> stop_strings_;  // non-empty ones
  std::string pending_;                    // text held back
  bool stopped_ = false;
};

}  // namespace cleave
