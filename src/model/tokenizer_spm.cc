// SentencePiece-style BPE ("llama" in GGUF): Llama 1/2, Mistral v0.1, TinyLlama, Gemma-style
// vocabularies.
//
// No pre-tokenizer: spaces become U+2581 ("▁"), a "▁" is put in front of the text (at the start
// and after each special token) when add_space_prefix, and the whole segment is one word. Its
// symbols start as single characters; the adjacent pair whose concatenation is the vocabulary
// entry with the highest score is merged, leftmost first, until no pair is in the vocabulary.
// A final symbol that is not a token falls back to its bytes' <0xNN> tokens, else <unk>.
#include <algorithm>

#include "model/pretokenizer.h"
#include "model/tokenizer_vocab.h"

namespace cleave::tokenizer_internal {
namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581

struct Symbol {
  uint32_t begin;   // byte range in the escaped text
  uint32_t length;  // 0 once merged into its left neighbour
  int32_t prev;
  int32_t next;  // -1 at the end
};

struct Candidate {
  float score;
  int32_t left;
  int32_t right;
  uint32_t left_length;
  uint32_t right_length;
  TokenId merged;
  // Heaps put the largest first: "larger" = higher score, then further left.
  bool operator<(const Candidate& other) const {
    return score != other.score ? score < other.score : left > other.left;
  }
};

class SpmTokenizer final : public VocabTokenizer {
 public:
  explicit SpmTokenizer(TokenizerData data) : VocabTokenizer(std::move(data)) { InitPieces(); }

  std::string_view pre_name() const override { return "spm"; }

 protected:
  void EncodeText(std::string_view text, bool segment_start,
                  std::vector<TokenId>* out) const override {
    std::string escaped;
    escaped.reserve(text.size() + 8);
    if (data().add_space_prefix && segment_start) escaped += kSpaceMarker;
    for (char c : text) {
      if (c == ' ') {
        escaped += kSpaceMarker;
      } else {
        escaped.push_back(c);
      }
    }

    // Symbol offsets are 32-bit; callers bound request sizes far below this.
    CLEAVE_CHECK(escaped.size() < (1ull << 31), "text of {} bytes is too long", escaped.size());
    std::vector<Symbol> symbols;
    symbols.reserve(escaped.size());
    for (size_t pos = 0; pos < escaped.size();) {
      size_t len = Utf8CharLength(std::string_view(escaped).substr(pos));
      if (len == 0) len = 1;  // an invalid byte is a symbol of its own (it will fall back)
      auto index = static_cast<int32_t>(symbols.size());
      symbols.push_back(
          {static_cast<uint32_t>(pos), static_cast<uint32_t>(len), index - 1, index + 1});
      pos += len;
    }
    if (symbols.empty()) return;
    symbols.back().next = -1;

    std::vector<Candidate> heap;
    auto try_queue = [&](int32_t left, int32_t right) {
      if (left < 0 || right < 0) return;
      const Symbol& l = symbols[left];
      const Symbol& r = symbols[right];
      TokenId merged = LookupNormal(std::string_view(escaped).substr(l.begin, l.length + r.length));
      if (merged < 0) return;
      heap.push_back({data().scores[merged], left, right, l.length, r.length, merged});
      std::push_heap(heap.begin(), heap.end());
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) try_queue(i, i + 1);

    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end());
      Candidate c = heap.back();
      heap.pop_back();
      Symbol& left = symbols[c.left];
      Symbol& right = symbols[c.right];
      // Symbols only grow, so unchanged lengths and adjacency mean the candidate is current.
      if (left.next != c.right || left.length != c.left_length || right.length != c.right_length) {
        continue;
      }
      left.length += right.length;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = c.left;
      right.length = 0;
      try_queue(left.prev, c.left);
      try_queue(c.left, left.next);
    }

    for (int32_t i = 0; i >= 0; i = symbols[i].next) {
      std::string_view piece =
          std::string_view(escaped).substr(symbols[i].begin, symbols[i].length);
      TokenId id = LookupNormal(piece);
      if (id >= 0) {
        out->push_back(id);
        continue;
      }
      bool have_bytes = std::all_of(piece.begin(), piece.end(), [&](char b) {
        return byte_tokens()[static_cast<uint8_t>(b)] >= 0;
      });
      if (have_bytes) {
        for (char b : piece) out->push_back(byte_tokens()[static_cast<uint8_t>(b)]);
      } else if (data().unk_id >= 0) {
        out->push_back(data().unk_id);
      }
    }
  }

  std::string NormalTokenBytes(std::string_view text) const override {
    std::string bytes;
    bytes.reserve(text.size());
    size_t pos = 0;
    while (pos < text.size()) {
      if (text.substr(pos).starts_with(kSpaceMarker)) {
        bytes.push_back(' ');
        pos += kSpaceMarker.size();
      } else {
        bytes.push_back(text[pos++]);
      }
    }
    return bytes;
  }

 private:
  // Only ordinary vocabulary entries take part in merging; control, byte and user-defined
  // tokens are never produced from plain text this way.
  TokenId LookupNormal(std::string_view text) const {
    TokenId id = Lookup(text);
    if (id < 0) return -1;
    TokenType type = data().token_types[id];
    return type == TokenType::kNormal || type == TokenType::kUndefined ? id : -1;
  }
};

}  // namespace

Result<std::unique_ptr<Tokenizer>> CreateSpmTokenizer(TokenizerData data) {
  return std::unique_ptr<Tokenizer>(new SpmTokenizer(std::move(data)));
}

}  // namespace cleave::tokenizer_internal
