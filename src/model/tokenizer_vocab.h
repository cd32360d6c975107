// Internal to the tokenizer files: the vocabulary logic both tokenizer models share (id <-> text
// maps, special-token splitting, BOS/EOS, end-of-generation ids, per-token decoded bytes).
// Subclasses supply only how plain text becomes ids and what bytes a normal token stands for.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model/tokenizer.h"

namespace cleave::tokenizer_internal {

class VocabTokenizer : public Tokenizer {
 public:
  std::vector<TokenId> Encode(std::string_view text, bool add_special,
                              bool parse_special) const override;
  std::string TokenToBytes(TokenId id, bool skip_special) const override;

  int32_t vocab_size() const override { return static_cast<int32_t>(data_.tokens.size()); }
  std::string_view TokenText(TokenId id) const override;
  TokenType GetTokenType(TokenId id) const override;
  TokenId bos_id() const override { return data_.bos_id; }
  TokenId eos_id() const override { return data_.eos_id; }
  const std::vector<TokenId>& eog_ids() const override { return eog_ids_; }
  bool add_bos() const override { return data_.add_bos; }
  bool add_eos() const override { return data_.add_eos; }
  bool add_space_prefix() const override { return data_.add_space_prefix; }
  std::string_view model_name() const override { return data_.model; }

 protected:
  // `data` must have passed ValidateTokenizerData(). Subclasses call InitPieces() once their own
  // state is ready.
  explicit VocabTokenizer(TokenizerData data);

  // Appends the ids for `text`, which holds no special tokens to match. `segment_start` is true
  // for the first piece of the input and for a piece right after a special token.
  virtual void EncodeText(std::string_view text, bool segment_start,
                          std::vector<TokenId>* out) const = 0;
  // The bytes a kNormal/kUndefined token stands for.
  virtual std::string NormalTokenBytes(std::string_view token_text) const = 0;
  // Fills pieces_ (decoded bytes per token) through NormalTokenBytes.
  void InitPieces();

  // The id of a token with exactly this text, or -1.
  TokenId Lookup(std::string_view text) const {
    auto it = token_to_id_.find(text);
    return it == token_to_id_.end() ? -1 : it->second;
  }
  // The id of the <0xNN> token for each byte, or -1 (filled from kByte tokens).
  const std::array<TokenId, 256>& byte_tokens() const { return byte_tokens_; }
  const TokenizerData& data() const { return data_; }

 private:
  struct Special {
    std::string_view text;
    TokenId id;
    bool always;  // user-defined tokens are matched even without parse_special
  };
  // Calls emit_text(view) and emit_token(id) in input order.
  template <typename TextFn, typename TokenFn>
  void Partition(std::string_view text, bool parse_special, TextFn emit_text,
                 TokenFn emit_token) const;

  TokenizerData data_;
  std::unordered_map<std::string_view, TokenId> token_to_id_;  // views into data_.tokens
  std::array<TokenId, 256> byte_tokens_;
  // Special tokens grouped by first byte, longest first, for leftmost-longest matching.
  std::array<std::vector<Special>, 256> specials_by_first_byte_;
  std::vector<TokenId> eog_ids_;
  std::vector<std::string> pieces_;
};

// Checks sizes, ranges and enum values before a tokenizer is built on `data`.
Status ValidateTokenizerData(const TokenizerData& data);

Result<std::unique_ptr<Tokenizer>> CreateBpeTokenizer(TokenizerData data);
Result<std::unique_ptr<Tokenizer>> CreateSpmTokenizer(TokenizerData data);

}  // namespace cleave::tokenizer_internal
