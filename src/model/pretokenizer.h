// Pre-tokenization for byte-level BPE: splits text into the pieces ("words") that BPE merges
// never cross, with the regexes that a GGUF's `tokenizer.ggml.pre` names. The regexes run on
// PCRE2 with PCRE2_UTF | PCRE2_UCP (so \p{L}, \p{N} and \s are Unicode-aware), JIT-compiled
// once at construction.
//
// Several regexes apply in sequence, as in Hugging Face's pre-tokenizer `Sequence`: each splits
// every piece the previous one produced into its matches and the gaps between them (both kept,
// in order). So the pieces always cover the input exactly.
//
// Thread-safety: immutable after Create(); Split() may run concurrently (per-thread scratch).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace cleave {

class PreTokenizer {
 public:
  // `name` is a `tokenizer.ggml.pre` value. An unknown name falls back to the GPT-2 regex and
  // logs a warning; only a regex that fails to compile is an error.
  static Result<std::unique_ptr<PreTokenizer>> Create(std::string_view name);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // The canonical name of the regex set in use: "gpt2", "smollm", "llama3" or "qwen2".
  std::string_view name() const { return name_; }

  // Appends to `pieces` views into `text` that cover it in order, none empty. Bytes that are not
  // part of valid UTF-8 (PCRE2 cannot match them) each come out as a piece of their own.
  void Split(std::string_view text, std::vector<std::string_view>* pieces) const;

 private:
  struct Regex;
  PreTokenizer() = default;
  void SplitOne(const Regex& regex, std::string_view piece,
                std::vector<std::string_view>* out) const;

  std::string name_;
  std::vector<std::unique_ptr<Regex>> regexes_;
};

// Length of the longest prefix of `text` that is valid UTF-8 (no overlongs, no surrogates, at
// most U+10FFFF), the same rules PCRE2 checks.
size_t ValidUtf8Prefix(std::string_view text);
// Length of the UTF-8 sequence starting at text[0] if it is complete and valid, else 0.
size_t Utf8CharLength(std::string_view text);

}  // namespace cleave
