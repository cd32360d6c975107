// Tokenizers built from a GGUF file's `tokenizer.ggml.*` metadata:
//   - "gpt2":  byte-level BPE with a pre-tokenizer regex chosen by `tokenizer.ggml.pre`
//              (PCRE2 with Unicode), merges ranked by `tokenizer.ggml.merges`;
//   - "llama": SentencePiece-style BPE over scores, with byte fallback (<0xNN> tokens).
// Special/control tokens are matched in the input only when parse_special is set.
//
// Thread-safety: a Tokenizer is immutable after construction and safe to share.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace cleave::gguf {
class GgufFile;
}

namespace cleave {

using TokenId = int32_t;

// GGUF `tokenizer.ggml.token_type` values.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// Everything a tokenizer is built from, as stored under `tokenizer.ggml.*` in a GGUF file. Lets
// tests and tools build a tokenizer without a GGUF.
struct TokenizerData {
  std::string model;            // "gpt2" (byte-level BPE) or "llama" (SentencePiece BPE)
  std::string pre = "default";  // pre-tokenizer name (gpt2 only); unknown names fall back
  std::vector<std::string> tokens;
  std::vector<float> scores;           // per token; empty = all 0 (only "llama" uses them)
  std::vector<TokenType> token_types;  // per token; empty = all kNormal
  std::vector<std::string> merges;     // "left right", best first (only "gpt2" uses them)
  TokenId bos_id = -1;
  TokenId eos_id = -1;
  TokenId unk_id = -1;
  TokenId pad_id = -1;
  TokenId eot_id = -1;
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = false;  // "llama": prepend a space to text at the start/after specials

  // Reads the `tokenizer.ggml.*` keys; defaults follow llama.cpp (add_bos and add_space_prefix
  // default to true for "llama", false for "gpt2").
  static Result<TokenizerData> FromGguf(const gguf::GgufFile& file);
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Validates `data` (ids in range, merges well-formed, per-token arrays sized like `tokens`).
  static Result<std::unique_ptr<Tokenizer>> Create(TokenizerData data);
  static Result<std::unique_ptr<Tokenizer>> FromGguf(const gguf::GgufFile& file);

  // Text to ids. add_special adds BOS/EOS as the model's add_bos/add_eos flags say;
  // parse_special recognises special-token text (e.g. "<|im_start|>") as those tokens.
  virtual std::vector<TokenId> Encode(std::string_view text, bool add_special,
                                      bool parse_special) const = 0;
  // The raw bytes one token stands for (byte-level decoded; may be part of a UTF-8 character).
  // Control tokens yield their text unless skip_special. Ids outside the vocab yield "".
  virtual std::string TokenToBytes(TokenId id, bool skip_special = false) const = 0;
  // Ids to text; invalid UTF-8 is kept as is (use IncrementalDecoder to stream). For "llama"
  // vocabularies with add_space_prefix, the space added in front of the text is removed again.
  std::string Decode(std::span<const TokenId> ids, bool skip_special = false) const;

  virtual int32_t vocab_size() const = 0;
  virtual std::string_view TokenText(TokenId id) const = 0;  // as stored in the vocab
  virtual TokenType GetTokenType(TokenId id) const = 0;
  virtual TokenId bos_id() const = 0;  // -1 if none
  virtual TokenId eos_id() const = 0;  // -1 if none
  // Ids that end generation (EOS, EOT, <|im_end|>, <|eot_id|>, ...).
  virtual const std::vector<TokenId>& eog_ids() const = 0;
  bool IsEog(TokenId id) const;
  virtual bool add_bos() const = 0;
  virtual bool add_eos() const = 0;
  // Not pure, so that test fakes need not implement them.
  virtual bool add_space_prefix() const { return false; }
  virtual std::string_view model_name() const { return {}; }  // "gpt2" or "llama"
  virtual std::string_view pre_name() const { return {}; }    // the pre-tokenizer in use
};

// Turns a stream of token ids into text deltas that never split a UTF-8 character: bytes of an
// incomplete character are held until the next token completes it (or Flush()).
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special = true)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}
  // Returns the text that became complete with this token (possibly empty).
  std::string Push(TokenId id);
  // Returns whatever is held back (invalid bytes replaced by U+FFFD).
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace cleave
