// The tokenizer factory, the vocabulary logic shared by both models, Decode and the incremental
// (streaming) decoder. The models themselves live in tokenizer_bpe.cc and tokenizer_spm.cc.
#include "model/tokenizer.h"

#include <algorithm>
#include <charconv>
#include <limits>

#include "model/pretokenizer.h"
#include "model/tokenizer_vocab.h"

namespace cleave {
namespace tokenizer_internal {
namespace {

// Texts of tokens that end a turn in the chat formats we know of.
constexpr std::string_view kEndOfTurnTexts[] = {
    "<|im_end|>",    "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>",
    "<|endoftext|>", "</s>",       "<|end|>",         "<|eom_id|>",
};

// Parses "<0xNN>" (the SentencePiece byte-fallback token text); -1 if it is not one.
int ParseByteToken(std::string_view text) {
  if (text.size() != 6 || !text.starts_with("<0x") || text.back() != '>') return -1;
  int value = 0;
  auto [ptr, ec] = std::from_chars(text.data() + 3, text.data() + 5, value, 16);
  if (ec != std::errc() || ptr != text.data() + 5) return -1;
  return value;
}

}  // namespace

Status ValidateTokenizerData(const TokenizerData& data) {
  size_t n = data.tokens.size();
  if (n == 0) return InvalidArgument("tokenizer: empty vocabulary");
  if (n > static_cast<size_t>(std::numeric_limits<TokenId>::max())) {
    return OutOfRange("tokenizer: vocabulary of {} tokens is too large", n);
  }
  if (!data.scores.empty() && data.scores.size() != n) {
    return InvalidArgument("tokenizer: {} scores for {} tokens", data.scores.size(), n);
  }
  if (!data.token_types.empty() && data.token_types.size() != n) {
    return InvalidArgument("tokenizer: {} token types for {} tokens", data.token_types.size(), n);
  }
  for (size_t i = 0; i < data.token_types.size(); ++i) {
    auto type = static_cast<int32_t>(data.token_types[i]);
    if (type < 0 || type > static_cast<int32_t>(TokenType::kByte)) {
      return InvalidArgument("tokenizer: token {} has unknown type {}", i, type);
    }
  }
  const std::pair<const char*, TokenId> ids[] = {{"bos", data.bos_id},
                                                 {"eos", data.eos_id},
                                                 {"unknown", data.unk_id},
                                                 {"padding", data.pad_id},
                                                 {"eot", data.eot_id}};
  for (auto [name, id] : ids) {
    if (id < -1 || id >= static_cast<TokenId>(n)) {
      return OutOfRange("tokenizer: {} token id {} outside the vocabulary of {}", name, id, n);
    }
  }
  return Status::Ok();
}

VocabTokenizer::VocabTokenizer(TokenizerData data) : data_(std::move(data)) {
  const auto n = static_cast<TokenId>(data_.tokens.size());
  if (data_.token_types.empty()) data_.token_types.assign(n, TokenType::kNormal);
  if (data_.scores.empty()) data_.scores.assign(n, 0.0f);
  byte_tokens_.fill(-1);
  token_to_id_.reserve(n);
  for (TokenId id = 0; id < n; ++id) {
    std::string_view text = data_.tokens[id];
    token_to_id_.emplace(text, id);  // the first of duplicate texts wins
    TokenType type = data_.token_types[id];
    if (type == TokenType::kByte) {
      int byte = ParseByteToken(text);
      if (byte >= 0 && byte_tokens_[byte] < 0) byte_tokens_[byte] = id;
    }
    bool always = type == TokenType::kUserDefined;
    if ((always || type == TokenType::kControl || type == TokenType::kUnknown) && !text.empty()) {
      specials_by_first_byte_[static_cast<uint8_t>(text[0])].push_back({text, id, always});
    }
  }
  for (auto& specials : specials_by_first_byte_) {
    std::stable_sort(specials.begin(), specials.end(), [](const Special& a, const Special& b) {
      return a.text.size() > b.text.size();
    });
  }
  for (TokenId id : {data_.eos_id, data_.eot_id}) {
    if (id >= 0) eog_ids_.push_back(id);
  }
  for (std::string_view text : kEndOfTurnTexts) {
    TokenId id = Lookup(text);
    if (id >= 0 && data_.token_types[id] != TokenType::kNormal) eog_ids_.push_back(id);
  }
  std::sort(eog_ids_.begin(), eog_ids_.end());
  eog_ids_.erase(std::unique(eog_ids_.begin(), eog_ids_.end()), eog_ids_.end());
}

void VocabTokenizer::InitPieces() {
  pieces_.resize(data_.tokens.size());
  for (size_t id = 0; id < data_.tokens.size(); ++id) {
    const std::string& text = data_.tokens[id];
    switch (data_.token_types[id]) {
      case TokenType::kNormal:
      case TokenType::kUndefined:
        pieces_[id] = NormalTokenBytes(text);
        break;
      case TokenType::kByte: {
        int byte = ParseByteToken(text);
        pieces_[id] = byte >= 0 ? std::string(1, static_cast<char>(byte)) : text;
        break;
      }
      case TokenType::kUnused:
        break;
      case TokenType::kUnknown:
      case TokenType::kControl:
      case TokenType::kUserDefined:
        pieces_[id] = text;
        break;
    }
  }
}

template <typename TextFn, typename TokenFn>
void VocabTokenizer::Partition(std::string_view text, bool parse_special, TextFn emit_text,
                               TokenFn emit_token) const {
  size_t segment_begin = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const Special* match = nullptr;
    for (const Special& special : specials_by_first_byte_[static_cast<uint8_t>(text[pos])]) {
      if ((parse_special || special.always) && text.substr(pos).starts_with(special.text)) {
        match = &special;  // longest first, so the first match is the longest
        break;
      }
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    if (pos > segment_begin) emit_text(text.substr(segment_begin, pos - segment_begin));
    emit_token(match->id);
    pos += match->text.size();
    segment_begin = pos;
  }
  if (segment_begin < text.size()) emit_text(text.substr(segment_begin));
}

std::vector<TokenId> VocabTokenizer::Encode(std::string_view text, bool add_special,
                                            bool parse_special) const {
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 2);
  if (add_special && data_.add_bos && data_.bos_id >= 0) ids.push_back(data_.bos_id);
  bool segment_start = true;
  Partition(
      text, parse_special,
      [&](std::string_view segment) {
        EncodeText(segment, segment_start, &ids);
        segment_start = false;
      },
      [&](TokenId id) {
        ids.push_back(id);
        segment_start = true;
      });
  if (add_special && data_.add_eos && data_.eos_id >= 0) ids.push_back(data_.eos_id);
  return ids;
}

std::string VocabTokenizer::TokenToBytes(TokenId id, bool skip_special) const {
  if (id < 0 || id >= vocab_size()) return {};
  TokenType type = data_.token_types[id];
  if (skip_special && (type == TokenType::kControl || type == TokenType::kUnknown)) return {};
  return pieces_[id];
}

std::string_view VocabTokenizer::TokenText(TokenId id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return data_.tokens[id];
}

TokenType VocabTokenizer::GetTokenType(TokenId id) const {
  if (id < 0 || id >= vocab_size()) return TokenType::kUndefined;
  return data_.token_types[id];
}

}  // namespace tokenizer_internal

Result<std::unique_ptr<Tokenizer>> Tokenizer::Create(TokenizerData data) {
  CLEAVE_RETURN_IF_ERROR(tokenizer_internal::ValidateTokenizerData(data));
  if (data.model == "gpt2") return tokenizer_internal::CreateBpeTokenizer(std::move(data));
  if (data.model == "llama") return tokenizer_internal::CreateSpmTokenizer(std::move(data));
  return Unimplemented("tokenizer: model '{}' is not supported (only gpt2 and llama)", data.model);
}

std::string Tokenizer::Decode(std::span<const TokenId> ids, bool skip_special) const {
  std::string text;
  for (TokenId id : ids) text += TokenToBytes(id, skip_special);
  // SentencePiece put a space in front of the text; take it off again.
  if (add_space_prefix() && !text.empty() && text[0] == ' ') text.erase(0, 1);
  return text;
}

bool Tokenizer::IsEog(TokenId id) const {
  const std::vector<TokenId>& ids = eog_ids();
  return std::binary_search(ids.begin(), ids.end(), id);
}

namespace {

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// True if `bytes` (non-empty) is the start of a valid UTF-8 sequence that more bytes could
// complete.
bool IsIncompleteUtf8(std::string_view bytes) {
  auto b0 = static_cast<uint8_t>(bytes[0]);
  size_t need = b0 >= 0xC2 && b0 < 0xE0   ? 2
                : b0 >= 0xE0 && b0 < 0xF0 ? 3
                : b0 >= 0xF0 && b0 < 0xF5 ? 4
                                          : 0;
  if (need == 0 || bytes.size() >= need) return false;
  for (size_t i = 1; i < bytes.size(); ++i) {
    auto b = static_cast<uint8_t>(bytes[i]);
    if ((b & 0xC0) != 0x80) return false;
    if (i == 1) {
      if (b0 == 0xE0 && b < 0xA0) return false;   // overlong
      if (b0 == 0xED && b >= 0xA0) return false;  // surrogate
      if (b0 == 0xF0 && b < 0x90) return false;   // overlong
      if (b0 == 0xF4 && b >= 0x90) return false;  // above U+10FFFF
    }
  }
  return true;
}

}  // namespace

std::string IncrementalDecoder::Push(TokenId id) {
  pending_ += tokenizer_.TokenToBytes(id, skip_special_);
  std::string out;
  size_t pos = 0;
  while (pos < pending_.size()) {
    std::string_view rest = std::string_view(pending_).substr(pos);
    size_t len = Utf8CharLength(rest);
    if (len > 0) {
      out.append(rest.substr(0, len));
      pos += len;
    } else if (IsIncompleteUtf8(rest)) {
      break;  // wait for the bytes that complete it
    } else {
      out += kReplacementChar;  // can never become valid: replace now rather than stall
      ++pos;
    }
  }
  pending_.erase(0, pos);
  return out;
}

std::string IncrementalDecoder::Flush() {
  std::string out;
  if (!pending_.empty()) out = kReplacementChar;  // what is held is one incomplete character
  pending_.clear();
  return out;
}

}  // namespace cleave
