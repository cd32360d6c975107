#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "tests/engine/fake_executor.h"

namespace cleave {
namespace {

using testing::FakeExecutor;
using testing::ReferenceGreedy;

constexpr int32_t kVocab = 97;

SamplingParams Greedy(int32_t max_tokens) {
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = max_tokens;
  return p;
}

std::vector<TokenId> RandomTokens(std::mt19937& rng, int32_t n) {
  std::vector<TokenId> v(n);
  for (auto& t : v) t = TokenId(rng() % kVocab);
  return v;
}

// Scheduler + block pool + fake executor, stepped by hand with greedy sampling and a max_tokens
// stop. Every test ends by checking that all blocks are back in the pool.
class SchedulerTest : public ::testing::Test {
 protected:
  void Init(int32_t num_blocks, int32_t block_size, SchedulerConfig config, bool caching = true) {
    pool_ = std::make_unique<BlockPool>(num_blocks, block_size, caching);
    sched_ = std::make_unique<Scheduler>(config, pool_.get());
    fake_ = std::make_unique<FakeExecutor>(kVocab, num_blocks, block_size);
  }
  void TearDown() override {
    if (!pool_) return;
    EXPECT_EQ(sched_->num_unfinished(), 0);
    pool_->CheckInvariants();
    EXPECT_EQ(pool_->num_free_blocks(), pool_->num_blocks()) << "blocks leaked";
  }

  RequestId Add(std::vector<TokenId> prompt, int32_t max_tokens, int32_t priority = 0) {
    RequestId id = next_id_++;
    sched_->Add(
        std::make_unique<Sequence>(id, std::move(prompt), Greedy(max_tokens), priority, id, 0.0));
    return id;
  }

  // One step; returns the batch. Finished sequences are collected into done_.
  ScheduledBatch Step() {
    ScheduledBatch batch = sched_->Schedule();
    for (RequestId id : batch.failed) done_[id] = sched_->Finish(id, FinishReason::kNone);
    CheckBatch(batch);
    if (batch.empty()) return batch;
    auto logits = fake_->Execute(batch);
    EXPECT_TRUE(logits.ok()) << logits.status().ToString();
    if (!logits.ok()) return batch;
    sched_->OnBatchComputed(batch);
    int32_t row = 0;
    for (const ScheduledSeq& s : batch.seqs) {
      if (!s.needs_logits) continue;
      auto r = logits->row(row++);
      Sequence* seq = sched_->Find(s.request_id);
      seq->AppendToken(TokenId(std::max_element(r.begin(), r.end()) - r.begin()));
      if (seq->num_output_tokens() >= seq->params().max_tokens) {
        done_[s.request_id] = sched_->Finish(s.request_id, FinishReason::kLength);
      }
    }
    return batch;
  }
  void RunToCompletion(int max_steps = 100000) {
    for (int i = 0; i < max_steps && sched_->has_unfinished(); ++i) Step();
    ASSERT_FALSE(sched_->has_unfinished());
  }
  std::vector<TokenId> Output(RequestId id) {
    auto out = done_.at(id)->output();
    return {out.begin(), out.end()};
  }

  // Structural invariants of every batch and of the scheduler/pool state after Schedule().
  void CheckBatch(const ScheduledBatch& batch) {
    const SchedulerConfig& c = sched_->config();
    EXPECT_LE(batch.num_tokens, c.max_batch_tokens);
    EXPECT_LE(int32_t(batch.seqs.size()), c.max_seqs);
    EXPECT_LE(sched_->num_running(), c.max_seqs);
    int32_t total = 0;
    std::set<RequestId> ids;
    for (const ScheduledSeq& s : batch.seqs) {
      EXPECT_TRUE(ids.insert(s.request_id).second);
      Sequence* seq = sched_->Find(s.request_id);
      ASSERT_NE(seq, nullptr);
      EXPECT_EQ(seq->status, SequenceStatus::kRunning);
      EXPECT_EQ(s.start, seq->num_computed_tokens);
      EXPECT_GE(s.num_tokens, 1);
      if (c.max_chunk_tokens > 0) {
        EXPECT_LE(s.num_tokens, c.max_chunk_tokens);
      }
      EXPECT_LE(s.start + s.num_tokens, seq->num_tokens());
      EXPECT_EQ(s.needs_logits, s.start + s.num_tokens == seq->num_tokens());
      EXPECT_GE(int32_t(s.block_table.size()) * pool_->block_size(), s.start + s.num_tokens);
      total += s.num_tokens;
    }
    EXPECT_EQ(total, batch.num_tokens);
    // Reference counts equal the number of block tables holding each block.
    std::map<BlockId, int32_t> refs;
    for (Sequence* seq : sched_->running()) {
      for (BlockId b : seq->block_table) ++refs[b];
      EXPECT_GE(int32_t(seq->block_table.size()) * pool_->block_size(), seq->num_computed_tokens);
    }
    for (Sequence* seq : sched_->waiting()) {
      for (BlockId b : seq->block_table) ++refs[b];
    }
    for (BlockId b = 0; b < pool_->num_blocks(); ++b) {
      EXPECT_EQ(pool_->ref_count(b), refs.count(b) ? refs[b] : 0) << "block " << b;
    }
    pool_->CheckInvariants();
  }

  std::unique_ptr<BlockPool> pool_;
  std::unique_ptr<Scheduler> sched_;
  std::unique_ptr<FakeExecutor> fake_;
  std::map<RequestId, std::unique_ptr<Sequence>> done_;
  RequestId next_id_ = 1;
};

TEST_F(SchedulerTest, BudgetAndSequenceCapAreRespected) {
  Init(256, 16, {.max_batch_tokens = 40, .max_seqs = 3});
  std::mt19937 rng(1);
  std::vector<RequestId> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(Add(RandomTokens(rng, 30), 5));
  RunToCompletion();
  EXPECT_EQ(fake_->max_batch_tokens_seen(), 40);
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(Output(ids[i]),
              ReferenceGreedy(*fake_,
                              {done_[ids[i]]->prompt().begin(), done_[ids[i]]->prompt().end()}, 5));
  }
}

TEST_F(SchedulerTest, DecodesComeFirstThenPrefillChunks) {
  Init(256, 16, {.max_batch_tokens = 20, .max_seqs = 8});
  std::mt19937 rng(2);
  RequestId a = Add(RandomTokens(rng, 5), 50);
  RequestId b = Add(RandomTokens(rng, 5), 50);
  Step();  // both prompts in one step
  Step();  // both decoding
  RequestId c = Add(RandomTokens(rng, 100), 3);
  ScheduledBatch batch = Step();
  ASSERT_EQ(batch.seqs.size(), 3u);
  EXPECT_EQ(batch.seqs[0].request_id, a);
  EXPECT_EQ(batch.seqs[0].num_tokens, 1);
  EXPECT_EQ(batch.seqs[1].request_id, b);
  EXPECT_EQ(batch.seqs[1].num_tokens, 1);
  EXPECT_EQ(batch.seqs[2].request_id, c);
  EXPECT_EQ(batch.seqs[2].num_tokens, 18);  // what the decodes left of the budget
  EXPECT_FALSE(batch.seqs[2].needs_logits);
  // The next steps keep decoding a and b while c's prompt continues in chunks.
  for (int i = 0; i < 3; ++i) {
    batch = Step();
    ASSERT_EQ(batch.seqs.size(), 3u);
    EXPECT_EQ(batch.seqs[2].request_id, c);
    EXPECT_EQ(batch.seqs[2].start, 18 * (i + 1));
  }
  RunToCompletion();
  EXPECT_EQ(Output(c),
            ReferenceGreedy(*fake_, {done_[c]->prompt().begin(), done_[c]->prompt().end()}, 3));
}

TEST_F(SchedulerTest, ChunkSizeDoesNotChangeTokens) {
  std::mt19937 rng(3);
  std::vector<std::vector<TokenId>> prompts;
  for (int i = 0; i < 8; ++i) prompts.push_back(RandomTokens(rng, 20 + 97 * i));
  std::vector<std::vector<TokenId>> first;
  for (int32_t chunk : {16, 64, 512}) {
    Init(512, 16, {.max_batch_tokens = 1024, .max_seqs = 8, .max_chunk_tokens = chunk});
    done_.clear();
    next_id_ = 1;
    std::vector<RequestId> ids;
    for (auto& p : prompts) ids.push_back(Add(p, 12));
    RunToCompletion();
    std::vector<std::vector<TokenId>> outs;
    for (RequestId id : ids) outs.push_back(Output(id));
    if (first.empty()) {
      first = outs;
      for (size_t i = 0; i < prompts.size(); ++i) {
        EXPECT_EQ(outs[i], ReferenceGreedy(*fake_, prompts[i], 12));
      }
    } else {
      EXPECT_EQ(outs, first) << "chunk " << chunk;
    }
    EXPECT_EQ(pool_->num_free_blocks(), pool_->num_blocks());
  }
}

TEST_F(SchedulerTest, PreemptsLatestArrivalAndResumesWithSameTokens) {
  // 4 sequences of 20-token prompts growing to 60 tokens need 4 * 4 blocks of 16; give 10.
  Init(10, 16, {.max_batch_tokens = 256, .max_seqs = 4});
  std::mt19937 rng(4);
  std::vector<std::vector<TokenId>> prompts;
  std::vector<RequestId> ids;
  for (int i = 0; i < 4; ++i) {
    prompts.push_back(RandomTokens(rng, 20));
    ids.push_back(Add(prompts.back(), 40));
  }
  bool saw_preemption = false;
  while (sched_->has_unfinished()) {
    ScheduledBatch batch = Step();
    for (RequestId p : batch.preempted) {
      saw_preemption = true;
      // The victim is the latest arrival among those that were running.
      for (Sequence* r : sched_->running()) EXPECT_LT(r->id(), p);
      EXPECT_EQ(sched_->Find(p)->status, SequenceStatus::kPreempted);
      EXPECT_EQ(sched_->Find(p)->num_computed_tokens, 0);
    }
  }
  EXPECT_TRUE(saw_preemption);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(Output(ids[i]), ReferenceGreedy(*fake_, prompts[i], 40));
  EXPECT_GT(done_[ids[3]]->num_preemptions, 0);
}

TEST_F(SchedulerTest, PriorityDecidesAdmissionAndVictim) {
  Init(8, 16, {.max_batch_tokens = 512, .max_seqs = 8});
  std::mt19937 rng(5);
  RequestId low = Add(RandomTokens(rng, 40), 40, /*priority=*/5);
  RequestId high = Add(RandomTokens(rng, 40), 40, /*priority=*/0);
  ScheduledBatch batch = Step();
  ASSERT_EQ(batch.seqs.size(), 2u);
  EXPECT_EQ(batch.seqs[0].request_id, high);  // admitted first although it arrived later
  bool low_preempted = false;
  while (sched_->has_unfinished()) {
    batch = Step();
    for (RequestId p : batch.preempted) {
      EXPECT_EQ(p, low);
      low_preempted = true;
    }
  }
  EXPECT_TRUE(low_preempted);
}

TEST_F(SchedulerTest, PrefixHitStartsAtCachedLengthAndFullHitRecomputesLastBlock) {
  Init(64, 16, {.max_batch_tokens = 512, .max_seqs = 8});
  std::mt19937 rng(6);
  std::vector<TokenId> shared = RandomTokens(rng, 64);
  RequestId a = Add(shared, 4);
  RunToCompletion();

  std::vector<TokenId> longer = shared;
  for (TokenId t : RandomTokens(rng, 10)) longer.push_back(t);
  RequestId b = Add(longer, 4);
  ScheduledBatch batch = Step();
  ASSERT_EQ(batch.seqs.size(), 1u);
  EXPECT_EQ(batch.seqs[0].start, 64);  // 4 cached blocks
  EXPECT_EQ(batch.seqs[0].num_tokens, 10);
  RunToCompletion();
  EXPECT_EQ(done_[b]->num_cached_prompt_tokens, 64);

  // The exact same block-aligned prompt: the last block is recomputed for its logits.
  RequestId c = Add(shared, 4);
  batch = Step();
  EXPECT_EQ(batch.seqs[0].start, 48);
  EXPECT_EQ(batch.seqs[0].num_tokens, 16);
  RunToCompletion();
  EXPECT_EQ(Output(c), Output(a));
  EXPECT_EQ(Output(b), ReferenceGreedy(*fake_, longer, 4));
  EXPECT_EQ(Output(a), ReferenceGreedy(*fake_, shared, 4));
}

TEST_F(SchedulerTest, ConcurrentSharersAndEvictionKeepTokensCorrect) {
  // A small cache: shared prefixes get reused while others are evicted under pressure.
  Init(24, 8, {.max_batch_tokens = 64, .max_seqs = 6});
  std::mt19937 rng(7);
  std::vector<std::vector<TokenId>> bases = {RandomTokens(rng, 24), RandomTokens(rng, 24)};
  std::vector<std::pair<RequestId, std::vector<TokenId>>> reqs;
  for (int round = 0; round < 6; ++round) {
    for (int i = 0; i < 3; ++i) {
      std::vector<TokenId> p = bases[(round + i) % 2];
      for (TokenId t : RandomTokens(rng, 1 + rng() % 12)) p.push_back(t);
      reqs.emplace_back(Add(p, 6), p);
    }
    Step();
    Step();
  }
  RunToCompletion();
  for (auto& [id, p] : reqs) EXPECT_EQ(Output(id), ReferenceGreedy(*fake_, p, 6));
  EXPECT_GT(pool_->stats().num_hit_tokens, 0);
  EXPECT_GT(pool_->stats().num_evictions, 0);
}

TEST_F(SchedulerTest, RequestThatCanNeverFitFailsWithCapacity) {
  Init(4, 16, {.max_batch_tokens = 512, .max_seqs = 4});
  std::mt19937 rng(8);
  RequestId too_long = Add(RandomTokens(rng, 65), 1);  // 5 blocks > 4
  RequestId grows = Add(RandomTokens(rng, 60), 10);    // fits now, outgrows the cache later
  RequestId ok = Add(RandomTokens(rng, 3), 2);
  RunToCompletion();
  EXPECT_EQ(done_.at(too_long)->finish_reason, FinishReason::kCapacity);
  EXPECT_EQ(done_.at(grows)->finish_reason, FinishReason::kCapacity);
  // KV for 64 positions fits; the token sampled after them is the 65th and cannot.
  EXPECT_EQ(done_.at(grows)->num_tokens(), 65);
  EXPECT_EQ(done_.at(ok)->finish_reason, FinishReason::kLength);
}

TEST_F(SchedulerTest, PrefilledSequenceSkipsItsPrompt) {
  Init(32, 16, {.max_batch_tokens = 512, .max_seqs = 4});
  std::mt19937 rng(9);
  std::vector<TokenId> prompt = RandomTokens(rng, 40);
  std::vector<TokenId> ref = ReferenceGreedy(*fake_, prompt, 5);
  // A "prefill worker" computed the prompt and the first token into blocks reserved here.
  std::vector<BlockId> blocks;
  ASSERT_TRUE(pool_->Allocate(pool_->BlocksFor(41), &blocks));
  fake_->WriteKv(blocks, prompt, 0);
  auto seq = std::make_unique<Sequence>(77, prompt, Greedy(5), 0, 0, 0.0);
  seq->AppendToken(ref[0]);
  seq->block_table = blocks;
  seq->num_computed_tokens = 40;
  sched_->AddPrefilled(std::move(seq));
  ScheduledBatch batch = Step();
  ASSERT_EQ(batch.seqs.size(), 1u);
  EXPECT_EQ(batch.seqs[0].start, 40);
  EXPECT_EQ(batch.seqs[0].num_tokens, 1);  // straight to decode
  RunToCompletion();
  EXPECT_EQ(Output(77), ref);

  // Everything computed, no token sampled yet: the last prompt token is recomputed.
  blocks.clear();
  ASSERT_TRUE(pool_->Allocate(pool_->BlocksFor(40), &blocks));
  fake_->WriteKv(blocks, prompt, 0);
  seq = std::make_unique<Sequence>(78, prompt, Greedy(5), 0, 1, 0.0);
  seq->block_table = blocks;
  seq->num_computed_tokens = 40;
  sched_->AddPrefilled(std::move(seq));
  batch = Step();
  EXPECT_EQ(batch.seqs[0].start, 39);
  RunToCompletion();
  EXPECT_EQ(Output(78), ref);
}

TEST_F(SchedulerTest, FinishFreesBlocksOfWaitingRunningAndPreempted) {
  Init(6, 16, {.max_batch_tokens = 512, .max_seqs = 2});
  std::mt19937 rng(10);
  RequestId a = Add(RandomTokens(rng, 40), 100);
  RequestId b = Add(RandomTokens(rng, 40), 100);
  RequestId c = Add(RandomTokens(rng, 10), 100);  // waits: max_seqs
  for (int i = 0; i < 30 && sched_->Find(b)->status != SequenceStatus::kPreempted; ++i) Step();
  ASSERT_EQ(sched_->Find(b)->status, SequenceStatus::kPreempted);
  EXPECT_NE(sched_->Finish(b, FinishReason::kCancelled), nullptr);
  EXPECT_NE(sched_->Finish(a, FinishReason::kCancelled), nullptr);
  EXPECT_EQ(sched_->Finish(a, FinishReason::kCancelled), nullptr);  // unknown now
  Step();
  EXPECT_EQ(sched_->Find(c)->status, SequenceStatus::kRunning);
  EXPECT_NE(sched_->Finish(c, FinishReason::kCancelled), nullptr);
}

// Random adds, cancels and steps over a small cache with shared prefixes and mixed
// priorities, checked after every step against the structural invariants (CheckBatch) and, for
// every request that ran to completion, against the greedy reference.
TEST_F(SchedulerTest, RandomizedOperationsKeepInvariants) {
  for (uint32_t seed : {11u, 12u, 13u}) {
    std::mt19937 rng(seed);
    const int32_t block_size = 4 << (seed % 3);  // 4, 8, 16
    Init(200 / block_size, block_size,
         {.max_batch_tokens = int32_t(16 + rng() % 100),
          .max_seqs = int32_t(2 + rng() % 6),
          .max_chunk_tokens = int32_t(rng() % 2 ? 0 : 1 + rng() % 40)},
         /*caching=*/seed != 13);
    done_.clear();
    std::map<RequestId, std::vector<TokenId>> prompts;
    std::set<RequestId> cancelled;
    std::vector<std::vector<TokenId>> prefixes = {RandomTokens(rng, 40), RandomTokens(rng, 17)};
    for (int op = 0; op < 2000; ++op) {
      int r = int(rng() % 10);
      if (r < 3) {
        std::vector<TokenId> p;
        if (rng() % 2) p = prefixes[rng() % 2];
        p.resize(p.size() * (rng() % 100) / 100);
        for (TokenId t : RandomTokens(rng, 1 + rng() % 50)) p.push_back(t);
        RequestId id = Add(p, 1 + int32_t(rng() % 30), int32_t(rng() % 3));
        prompts[id] = p;
      } else if (r < 4 && !prompts.empty()) {
        auto it = prompts.begin();
        std::advance(it, rng() % prompts.size());
        if (!done_.count(it->first) && !cancelled.count(it->first)) {
          auto seq = sched_->Finish(it->first, FinishReason::kCancelled);
          ASSERT_NE(seq, nullptr);
          cancelled.insert(it->first);
        }
      } else {
        Step();
        if (HasFailure()) return;
      }
    }
    RunToCompletion();
    for (auto& [id, p] : prompts) {
      if (cancelled.count(id)) continue;
      const Sequence& seq = *done_.at(id);
      if (seq.finish_reason == FinishReason::kCapacity) continue;
      EXPECT_EQ(Output(id), ReferenceGreedy(*fake_, p, seq.params().max_tokens)) << id;
    }
    EXPECT_GT(sched_->num_preemptions(), 0) << "seed " << seed << " never preempted";
    pool_->CheckInvariants();
    EXPECT_EQ(pool_->num_free_blocks(), pool_->num_blocks());
  }
}

}  // namespace
}  // namespace cleave
