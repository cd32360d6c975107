// Reading a tokenizer's data from GGUF metadata (`tokenizer.ggml.*`). In its own file so that
// users of Tokenizer::Create alone do not pull in the GGUF reader.
#include <limits>

#include "model/gguf.h"
#include "model/tokenizer.h"

namespace cleave {
namespace {

// Reads an optional token id key; -1 when absent.
Result<TokenId> GetTokenId(const gguf::GgufFile& file, std::string_view key) {
  CLEAVE_ASSIGN_OR_RETURN(int64_t id, file.GetIntOr(key, -1));
  if (id < -1 || id > std::numeric_limits<TokenId>::max()) {
    return OutOfRange("{} = {} is not a token id", key, id);
  }
  return static_cast<TokenId>(id);
}

}  // namespace

Result<TokenizerData> TokenizerData::FromGguf(const gguf::GgufFile& file) {
  TokenizerData data;
  CLEAVE_ASSIGN_OR_RETURN(data.model, file.GetString("tokenizer.ggml.model"));
  CLEAVE_ASSIGN_OR_RETURN(data.pre, file.GetStringOr("tokenizer.ggml.pre", "default"));
  CLEAVE_ASSIGN_OR_RETURN(data.tokens, file.GetStringArray("tokenizer.ggml.tokens"));
  if (data.tokens.empty()) return InvalidArgument("tokenizer.ggml.tokens is empty");
  if (file.Find("tokenizer.ggml.scores") != nullptr) {
    CLEAVE_ASSIGN_OR_RETURN(std::vector<double> scores,
                            file.GetFloatArray("tokenizer.ggml.scores"));
    data.scores.assign(scores.begin(), scores.end());
  }
  if (file.Find("tokenizer.ggml.token_type") != nullptr) {
    CLEAVE_ASSIGN_OR_RETURN(std::vector<int64_t> types,
                            file.GetIntArray("tokenizer.ggml.token_type"));
    data.token_types.reserve(types.size());
    for (int64_t type : types) {
      if (type < 0 || type > static_cast<int64_t>(TokenType::kByte)) {
        return InvalidArgument("tokenizer.ggml.token_type holds unknown type {}", type);
      }
      data.token_types.push_back(static_cast<TokenType>(type));
    }
  }
  if (file.Find("tokenizer.ggml.merges") != nullptr) {
    CLEAVE_ASSIGN_OR_RETURN(data.merges, file.GetStringArray("tokenizer.ggml.merges"));
  }
  CLEAVE_ASSIGN_OR_RETURN(data.bos_id, GetTokenId(file, "tokenizer.ggml.bos_token_id"));
  CLEAVE_ASSIGN_OR_RETURN(data.eos_id, GetTokenId(file, "tokenizer.ggml.eos_token_id"));
  CLEAVE_ASSIGN_OR_RETURN(data.unk_id, GetTokenId(file, "tokenizer.ggml.unknown_token_id"));
  CLEAVE_ASSIGN_OR_RETURN(data.pad_id, GetTokenId(file, "tokenizer.ggml.padding_token_id"));
  CLEAVE_ASSIGN_OR_RETURN(data.eot_id, GetTokenId(file, "tokenizer.ggml.eot_token_id"));
  const bool spm = data.model == "llama";
  CLEAVE_ASSIGN_OR_RETURN(data.add_bos, file.GetBoolOr("tokenizer.ggml.add_bos_token", spm));
  CLEAVE_ASSIGN_OR_RETURN(data.add_eos, file.GetBoolOr("tokenizer.ggml.add_eos_token", false));
  CLEAVE_ASSIGN_OR_RETURN(data.add_space_prefix,
                          file.GetBoolOr("tokenizer.ggml.add_space_prefix", spm));
  return data;
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const gguf::GgufFile& file) {
  CLEAVE_ASSIGN_OR_RETURN(TokenizerData data, TokenizerData::FromGguf(file));
  return Create(std::move(data));
}

}  // namespace cleave
