// Test doubles for the engine: a deterministic executor over a real paged "KV cache" of token
// ids, and a tiny tokenizer.
//
// FakeExecutor stores, for every KV slot, which token at which position was computed there.
// Logits for a sequence are a function of its whole context *as read back through its block
// table*, so a wrong block table, a stale or evicted shared block, a missed chunk or a bad
// prefix hit changes the tokens or fails the step with "stale KV". The correct next token for
// any context is FakeExecutor::NextToken(context), so tests compare against an independent
// reference instead of against recorded outputs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "model/tokenizer.h"

namespace cleave::testing {

inline uint64_t FakeMix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

class FakeExecutor : public Executor {
 public:
  FakeExecutor(int32_t vocab_size, int32_t num_blocks, int32_t block_size)
      : vocab_size_(vocab_size), block_size_(block_size), slots_(size_t(num_blocks) * block_size) {}

  int32_t vocab_size() const override { return vocab_size_; }

  static uint64_t ContextHash(std::span<const TokenId> context) {
    uint64_t h = 0x12345;
    for (TokenId t : context) h = FakeMix(h ^ (uint64_t(uint32_t(t)) + 0x9e3779b97f4a7c15ull));
    return h;
  }
  // The greedy next token after `context`: the argmax of FillLogits.
  TokenId NextToken(std::span<const TokenId> context) const {
    return TokenId(ContextHash(context) % uint64_t(vocab_size_));
  }
  // Noise in [0, 2) plus 3 on NextToken: a clear greedy winner and a non-degenerate
  // distribution for sampling tests.
  void FillLogits(std::span<const TokenId> context, std::span<float> row) const {
    uint64_t h = ContextHash(context);
    for (int32_t i = 0; i < vocab_size_; ++i) {
      row[i] = float(FakeMix(h + uint64_t(i) * 0x2545f4914f6cdd1dull) >> 40) * 0x1.0p-23f;
    }
    row[NextToken(context)] += 3.0f;
  }

  // Writes KV for positions [start, start + tokens.size()) as if computed (e.g. by a prefill
  // worker on another machine).
  void WriteKv(std::span<const BlockId> block_table, std::span<const TokenId> tokens,
               int32_t start) {
    for (size_t j = 0; j < tokens.size(); ++j) {
      int32_t pos = start + int32_t(j);
      slots_[Slot(block_table, pos)] = {tokens[j], pos};
    }
  }

  Result<Logits> Execute(const ScheduledBatch& batch) override {
    if (fail_next_) {
      fail_next_ = false;
      return Internal("injected executor failure");
    }
    ++num_steps_;
    max_batch_tokens_seen_ = std::max(max_batch_tokens_seen_, batch.num_tokens);
    Logits logits;
    logits.vocab_size = vocab_size_;
    for (const ScheduledSeq& s : batch.seqs) {
      if (size_t(s.start + s.num_tokens) > s.block_table.size() * size_t(block_size_)) {
        return Internal("seq {} span [{}, {}) beyond its {} blocks", s.request_id, s.start,
                        s.start + s.num_tokens, s.block_table.size());
      }
      WriteKv(s.block_table, s.token_ids, s.start);
      num_tokens_computed_ += s.num_tokens;
      if (!s.needs_logits) continue;
      // Read the whole context back through the block table, checking every slot.
      std::vector<TokenId> context(s.start + s.num_tokens);
      for (int32_t pos = 0; pos < int32_t(context.size()); ++pos) {
        const Entry& e = slots_[Slot(s.block_table, pos)];
        if (e.position != pos) {
          return Internal("stale KV: seq {} position {} holds position {}", s.request_id, pos,
                          e.position);
        }
        context[pos] = e.token;
      }
      size_t offset = logits.data.size();
      logits.data.resize(offset + vocab_size_);
      FillLogits(context, std::span<float>(logits.data).subspan(offset, vocab_size_));
    }
    return logits;
  }

  void FailNextStep() { fail_next_ = true; }
  int64_t num_steps() const { return num_steps_; }
  int64_t num_tokens_computed() const { return num_tokens_computed_; }
  int32_t max_batch_tokens_seen() const { return max_batch_tokens_seen_; }

 private:
  struct Entry {
    TokenId token = -1;
    int32_t position = -1;
  };
  size_t Slot(std::span<const BlockId> table, int32_t pos) const {
    return size_t(table[pos / block_size_]) * block_size_ + pos % block_size_;
  }

  int32_t vocab_size_;
  int32_t block_size_;
  std::vector<Entry> slots_;
  bool fail_next_ = false;
  int64_t num_steps_ = 0;
  int64_t num_tokens_computed_ = 0;
  int32_t max_batch_tokens_seen_ = 0;
};

// Greedy reference: what a correct engine must generate for `prompt`, stopping after
// max_tokens or at `eos` (included), whichever comes first.
inline std::vector<TokenId> ReferenceGreedy(const FakeExecutor& fake, std::vector<TokenId> context,
                                            int32_t max_tokens, TokenId eos = -1) {
  std::vector<TokenId> out;
  while (int32_t(out.size()) < max_tokens) {
    TokenId t = fake.NextToken(context);
    out.push_back(t);
    context.push_back(t);
    if (t == eos) break;
  }
  return out;
}

// Vocabulary: id 0 is the EOG control token "</s>"; id 1 and 2 are the two bytes of "é"
// (0xC3 0xA9), so text can split inside a character; other ids are one or two ASCII letters.
class FakeTokenizer : public Tokenizer {
 public:
  explicit FakeTokenizer(int32_t vocab_size) : vocab_size_(vocab_size) {
    for (int32_t id = 0; id < vocab_size; ++id) texts_.push_back(MakeText(id));
  }
  static std::string MakeText(int32_t id) {
    if (id == 0) return "</s>";
    if (id == 1) return "\xC3";
    if (id == 2) return "\xA9";
    std::string s(1, char('a' + id % 26));
    if (id % 3 == 0) s += char('a' + (id / 3) % 26);
    return s;
  }
  std::vector<TokenId> Encode(std::string_view, bool, bool) const override { return {}; }
  std::string TokenToBytes(TokenId id, bool skip_special) const override {
    if (id == 0 && skip_special) return "";
    return texts_.at(id);
  }
  int32_t vocab_size() const override { return vocab_size_; }
  std::string_view TokenText(TokenId id) const override { return texts_.at(id); }
  TokenType GetTokenType(TokenId id) const override {
    return id == 0 ? TokenType::kControl : TokenType::kNormal;
  }
  TokenId bos_id() const override { return -1; }
  TokenId eos_id() const override { return 0; }
  const std::vector<TokenId>& eog_ids() const override { return eog_; }
  bool add_bos() const override { return false; }
  bool add_eos() const override { return false; }

 private:
  int32_t vocab_size_;
  std::vector<std::string> texts_;
  std::vector<TokenId> eog_{0};
};

}  // namespace cleave::testing
