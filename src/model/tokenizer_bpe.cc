// Byte-level BPE ("gpt2" in GGUF): GPT-2, Llama 3, Qwen2, SmolLM and most recent models.
//
// Text -> special-token split -> pre-tokenizer regexes -> per piece: bytes mapped to printable
// code points (GPT-2's byte<->unicode table), one symbol per byte, then the merge with the best
// (lowest) rank among adjacent symbol pairs is applied, leftmost first, until none applies.
#include <algorithm>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "model/pretokenizer.h"
#include "model/tokenizer_vocab.h"

namespace cleave::tokenizer_internal {
namespace {

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// GPT-2's reversible byte <-> code point table: bytes that are printable Latin-1 characters
// ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves; the other 68 bytes map to U+0100 + n in
// byte order, so that no vocabulary string contains whitespace or control characters.
struct ByteUnicodeTable {
  static constexpr uint32_t kMaxCodePoint = 0x100 + 68;
  std::array<std::string, 256> byte_to_utf8;
  std::array<int, kMaxCodePoint> code_point_to_byte;

  ByteUnicodeTable() {
    code_point_to_byte.fill(-1);
    uint32_t next_extra = 0x100;
    for (uint32_t byte = 0; byte < 256; ++byte) {
      bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) ||
                       (byte >= 0xAE && byte <= 0xFF);
      uint32_t cp = printable ? byte : next_extra++;
      AppendUtf8(cp, &byte_to_utf8[byte]);
      code_point_to_byte[cp] = static_cast<int>(byte);
    }
  }
};

const ByteUnicodeTable& ByteUnicode() {
  static const ByteUnicodeTable table;
  return table;
}

struct Merge {
  int32_t rank;
  TokenId merged;
};

uint64_t PairKey(TokenId left, TokenId right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// One symbol of a word being merged: a doubly linked list over the word's bytes.
struct Symbol {
  TokenId id;
  int32_t prev;
  int32_t next;  // -1 at the end
};

// A merge that was possible when queued; stale once either side has changed.
struct Candidate {
  int32_t rank;
  int32_t left;
  int32_t right;
  TokenId left_id;
  TokenId right_id;
  TokenId merged;
  // Heaps put the largest first: "larger" = better rank, then further left.
  bool operator<(const Candidate& other) const {
    return rank != other.rank ? rank > other.rank : left > other.left;
  }
};

// Buffers reused across the words of one Encode call.
struct Scratch {
  std::vector<Symbol> symbols;
  std::vector<Candidate> queue_storage;
  std::string mapped;
  std::vector<std::string_view> pieces;
};

class BpeTokenizer final : public VocabTokenizer {
 public:
  static Result<std::unique_ptr<Tokenizer>> Make(TokenizerData data) {
    CLEAVE_ASSIGN_OR_RETURN(auto pre, PreTokenizer::Create(data.pre));
    std::unique_ptr<BpeTokenizer> tokenizer(new BpeTokenizer(std::move(data), std::move(pre)));
    CLEAVE_RETURN_IF_ERROR(tokenizer->Init());
    return std::unique_ptr<Tokenizer>(std::move(tokenizer));
  }

  std::string_view pre_name() const override { return pre_->name(); }

 protected:
  void EncodeText(std::string_view text, bool segment_start,
                  std::vector<TokenId>* out) const override {
    Scratch scratch;
    pre_->Split(text, &scratch.pieces);
    for (std::string_view word : scratch.pieces) EncodeWord(word, &scratch, out);
  }

  std::string NormalTokenBytes(std::string_view text) const override {
    const ByteUnicodeTable& table = ByteUnicode();
    std::string bytes;
    size_t pos = 0;
    while (pos < text.size()) {
      size_t len = Utf8CharLength(text.substr(pos));
      if (len == 0) {  // not UTF-8: keep the byte
        bytes.push_back(text[pos++]);
        continue;
      }
      uint32_t cp = DecodeCodePoint(text.substr(pos, len));
      if (cp < ByteUnicodeTable::kMaxCodePoint && table.code_point_to_byte[cp] >= 0) {
        bytes.push_back(static_cast<char>(table.code_point_to_byte[cp]));
      } else {
        bytes.append(text.substr(pos, len));  // outside the table: keep the character
      }
      pos += len;
    }
    return bytes;
  }

 private:
  BpeTokenizer(TokenizerData data, std::unique_ptr<PreTokenizer> pre)
      : VocabTokenizer(std::move(data)), pre_(std::move(pre)) {}

  static uint32_t DecodeCodePoint(std::string_view c) {
    auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(c[i])); };
    switch (c.size()) {
      case 1:
        return b(0);
      case 2:
        return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
      case 3:
        return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
      default:
        return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    }
  }

  Status Init() {
    // Llama 3's tokenizer takes a piece that is a whole vocabulary entry as is (HF
    // "ignore_merges"), even where the merges would split it differently.
    ignore_merges_ = pre_->name() == "llama3";
    const ByteUnicodeTable& table = ByteUnicode();
    for (int byte = 0; byte < 256; ++byte) byte_symbol_[byte] = Lookup(table.byte_to_utf8[byte]);
    const auto& merges = data().merges;
    merges_.reserve(merges.size());
    size_t skipped = 0;
    std::string joined;
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      std::string_view merge = merges[rank];
      size_t space = merge.find(' ', 1);
      if (space == std::string_view::npos || merge.find(' ', space + 1) != std::string_view::npos) {
        return InvalidArgument("tokenizer: merge {} '{}' is not two tokens", rank, merge);
      }
      std::string_view left = merge.substr(0, space);
      std::string_view right = merge.substr(space + 1);
      joined.assign(left).append(right);
      TokenId left_id = Lookup(left);
      TokenId right_id = Lookup(right);
      TokenId merged = Lookup(joined);
      if (left_id < 0 || right_id < 0 || merged < 0) {
        ++skipped;
        continue;
      }
      merges_.emplace(PairKey(left_id, right_id), Merge{static_cast<int32_t>(rank), merged});
    }
    if (skipped > 0) {
      spdlog::warn("tokenizer: {} of {} merges name tokens outside the vocabulary; ignored",
                   skipped, merges.size());
    }
    InitPieces();
    return Status::Ok();
  }

  void EncodeWord(std::string_view word, Scratch* scratch, std::vector<TokenId>* out) const {
    if (ignore_merges_ && word.size() > 1) {
      scratch->mapped.clear();
      for (char c : word) scratch->mapped += ByteUnicode().byte_to_utf8[static_cast<uint8_t>(c)];
      TokenId whole = Lookup(scratch->mapped);
      if (whole >= 0) {
        out->push_back(whole);
        return;
      }
    }
    std::vector<Symbol>& symbols = scratch->symbols;
    symbols.clear();
    for (char c : word) {
      TokenId id = byte_symbol_[static_cast<uint8_t>(c)];
      if (id < 0) id = data().unk_id;
      if (id < 0) continue;  // neither the byte nor <unk> in the vocabulary: dropped, as in HF
      auto index = static_cast<int32_t>(symbols.size());
      symbols.push_back({id, index - 1, index + 1});
    }
    if (symbols.empty()) return;
    symbols.back().next = -1;

    // A binary heap of candidates (std::push_heap keeps the "largest", i.e. best, in front).
    std::vector<Candidate>& heap = scratch->queue_storage;
    heap.clear();
    auto try_queue = [&](int32_t left, int32_t right) {
      if (left < 0 || right < 0) return;
      auto it = merges_.find(PairKey(symbols[left].id, symbols[right].id));
      if (it == merges_.end()) return;
      heap.push_back(
          {it->second.rank, left, right, symbols[left].id, symbols[right].id, it->second.merged});
      std::push_heap(heap.begin(), heap.end());
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) try_queue(i, i + 1);

    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end());
      Candidate c = heap.back();
      heap.pop_back();
      Symbol& left = symbols[c.left];
      Symbol& right = symbols[c.right];
      // Merged symbols only grow, so matching ids and adjacency mean the candidate is current.
      if (left.next != c.right || left.id != c.left_id || right.id != c.right_id) continue;
      left.id = c.merged;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = c.left;
      right.id = -1;  // dead
      try_queue(left.prev, c.left);
      try_queue(c.left, left.next);
    }
    for (int32_t i = 0; i >= 0; i = symbols[i].next) out->push_back(symbols[i].id);
  }

  std::unique_ptr<PreTokenizer> pre_;
  std::unordered_map<uint64_t, Merge> merges_;  // (left id, right id) -> rank, merged id
  std::array<TokenId, 256> byte_symbol_;        // the single-byte token of each byte, or -1
  bool ignore_merges_ = false;
};

}  // namespace

Result<std::unique_ptr<Tokenizer>> CreateBpeTokenizer(TokenizerData data) {
  return BpeTokenizer::Make(std::move(data));
}

}  // namespace cleave::tokenizer_internal
