#include "engine/engine.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <random>
#include <thread>

#include "tests/engine/fake_executor.h"

namespace cleave {
namespace {

using testing::FakeExecutor;
using testing::FakeTokenizer;
using testing::ReferenceGreedy;

constexpr int32_t kVocab = 101;
constexpr TokenId kEos = 0;  // FakeTokenizer's EOG token

// A request's stream, folded together.
struct Collected {
  std::vector<TokenId> tokens;
  std::string text;
  std::vector<TokenLogprobs> logprobs;
  std::vector<double> token_times;
  int num_finished_messages = 0;
  RequestOutput last;
};

class EngineTest : public ::testing::Test {
 protected:
  void Init(EngineConfig config) {
    config_ = config;
    fake_ = std::make_unique<FakeExecutor>(kVocab, config.num_blocks, config.block_size);
    engine_ = std::make_unique<Engine>(config, fake_.get(), &tokenizer_);
  }
  void TearDown() override {
    if (!engine_) return;
    EXPECT_FALSE(engine_->HasUnfinished());
    EXPECT_EQ(engine_->block_stats().num_free_blocks, config_.num_blocks) << "blocks leaked";
  }

  RequestId Add(std::vector<TokenId> prompt, SamplingParams params, int32_t priority = 0) {
    auto id = engine_->AddRequest({std::move(prompt), std::move(params), priority});
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return *id;
  }
  void Drain() {
    for (RequestOutput& out : engine_->PollOutputs()) {
      Collected& c = collected_[out.request_id];
      EXPECT_EQ(c.num_finished_messages, 0) << "output after finish";
      c.tokens.insert(c.tokens.end(), out.token_ids.begin(), out.token_ids.end());
      c.text += out.text;
      c.logprobs.insert(c.logprobs.end(), out.logprobs.begin(), out.logprobs.end());
      c.token_times.insert(c.token_times.end(), out.token_times_s.begin(), out.token_times_s.end());
      c.num_finished_messages += out.finished;
      c.last = std::move(out);
    }
  }
  void Run() {
    ASSERT_TRUE(engine_->RunUntilIdle().ok());
    Drain();
  }
  // Runs every prompt through a fresh engine with `config`, returns the token streams.
  std::vector<std::vector<TokenId>> RunAll(EngineConfig config,
                                           const std::vector<std::vector<TokenId>>& prompts,
                                           const SamplingParams& params) {
    Init(config);
    collected_.clear();
    std::vector<RequestId> ids;
    for (const auto& p : prompts) ids.push_back(Add(p, params));
    Run();
    std::vector<std::vector<TokenId>> out;
    for (RequestId id : ids) {
      EXPECT_EQ(collected_[id].num_finished_messages, 1);
      out.push_back(collected_[id].tokens);
    }
    EXPECT_EQ(engine_->block_stats().num_free_blocks, config.num_blocks);
    return out;
  }

  std::vector<std::vector<TokenId>> Prompts(int n, uint32_t seed, int min_len = 5,
                                            int max_len = 300) {
    std::mt19937 rng(seed);
    std::vector<TokenId> shared(40);
    for (auto& t : shared) t = TokenId(3 + rng() % (kVocab - 3));
    std::vector<std::vector<TokenId>> prompts;
    for (int i = 0; i < n; ++i) {
      std::vector<TokenId> p;
      if (i % 2) p = shared;  // half share a 40-token prefix
      int len = min_len + int(rng() % (max_len - min_len));
      while (int(p.size()) < len) p.push_back(TokenId(3 + rng() % (kVocab - 3)));
      prompts.push_back(p);
    }
    return prompts;
  }

  // The tokens' text (appended to *text) and its length after each token.
  std::vector<size_t> TextEnds(const std::vector<TokenId>& tokens, std::string* text) const {
    std::vector<size_t> ends;
    for (TokenId t : tokens) {
      *text += tokenizer_.TokenToBytes(t, true);
      ends.push_back(text->size());
    }
    return ends;
  }

  static SamplingParams Greedy(int32_t max_tokens) {
    SamplingParams p;
    p.temperature = 0;
    p.max_tokens = max_tokens;
    return p;
  }

  EngineConfig config_;
  FakeTokenizer tokenizer_{kVocab};
  std::unique_ptr<FakeExecutor> fake_;
  std::unique_ptr<Engine> engine_;
  std::map<RequestId, Collected> collected_;
};

TEST_F(EngineTest, BatchedChunkedCachedAndPreemptedRunsGiveTheReferenceTokens) {
  auto prompts = Prompts(16, 1);
  const SamplingParams params = Greedy(24);
  EngineConfig base{.num_blocks = 512, .block_size = 16};

  // One at a time, against the independent reference.
  std::vector<std::vector<TokenId>> reference;
  for (const auto& p : prompts) {
    reference.push_back(RunAll(base, {p}, params)[0]);
    EXPECT_EQ(reference.back(), ReferenceGreedy(*fake_, p, 24, kEos));
  }
  EXPECT_EQ(RunAll(base, prompts, params), reference) << "16 at once";
  for (int32_t chunk : {16, 64, 512}) {
    EngineConfig c = base;
    c.scheduler.max_chunk_tokens = chunk;
    EXPECT_EQ(RunAll(c, prompts, params), reference) << "chunk " << chunk;
  }
  EngineConfig small_budget = base;
  small_budget.scheduler.max_batch_tokens = 16;
  EXPECT_EQ(RunAll(small_budget, prompts, params), reference) << "budget 16";
  EngineConfig no_cache = base;
  no_cache.enable_prefix_caching = false;
  EXPECT_EQ(RunAll(no_cache, prompts, params), reference) << "prefix caching off";
  EngineConfig tight = base;
  tight.num_blocks = 40;  // 640 tokens for 16 sequences of up to ~320
  EXPECT_EQ(RunAll(tight, prompts, params), reference) << "under preemption";
  EXPECT_GT(engine_->num_preemptions(), 0);
}

TEST_F(EngineTest, PrefixHitGivesSameTokensAndReportsCachedTokens) {
  Init({.num_blocks = 256, .block_size = 16});
  auto prompts = Prompts(2, 2, 100, 101);  // prompt 1 starts with the shared 40 tokens
  RequestId a = Add(prompts[1], Greedy(8));
  Run();
  RequestId b = Add(prompts[1], Greedy(8));
  Run();
  EXPECT_EQ(collected_[a].last.num_cached_tokens, 0);
  EXPECT_EQ(collected_[b].last.num_cached_tokens, 96);  // 6 full blocks of the 100-token prompt
  EXPECT_EQ(collected_[a].tokens, collected_[b].tokens);
  EXPECT_GT(engine_->block_stats().num_hit_tokens, 0);
}

TEST_F(EngineTest, SeededSamplingIsTheSameAloneAndInABatch) {
  SamplingParams params;
  params.temperature = 0.9f;
  params.top_p = 0.95f;
  params.top_k = 50;
  params.max_tokens = 20;
  params.ignore_eos = true;
  params.seed = 1234;
  auto prompts = Prompts(12, 3);
  EngineConfig config{.num_blocks = 512, .block_size = 16};
  auto alone = RunAll(config, {prompts[0]}, params);

  // In a batch with unseeded and differently seeded neighbours, under preemption.
  config.num_blocks = 30;
  Init(config);
  collected_.clear();
  std::vector<RequestId> others;
  for (size_t i = 1; i < prompts.size(); ++i) {
    SamplingParams other = params;
    other.seed = i % 2 ? std::optional<uint64_t>(i) : std::nullopt;
    others.push_back(Add(prompts[i], other));
  }
  RequestId seeded = Add(prompts[0], params);
  SamplingParams other_seed = params;
  other_seed.seed = 999;
  RequestId different = Add(prompts[0], other_seed);
  Run();
  EXPECT_GT(engine_->num_preemptions(), 0);
  EXPECT_EQ(collected_[seeded].tokens, alone[0]);
  EXPECT_NE(collected_[different].tokens, alone[0]);
  EXPECT_NE(alone[0], ReferenceGreedy(*fake_, prompts[0], 20)) << "sampling looks greedy";
}

TEST_F(EngineTest, StopStringAcrossTokensIsNotEmitted) {
  Init({.num_blocks = 64, .block_size = 16});
  std::vector<TokenId> prompt = Prompts(1, 4, 20, 21)[0];
  SamplingParams params = Greedy(40);
  params.ignore_eos = true;
  std::vector<TokenId> ref = ReferenceGreedy(*fake_, prompt, 40);
  std::string full;
  const std::vector<size_t> token_end = TextEnds(ref, &full);
  // A stop string that starts inside one token and ends inside a later one.
  size_t begin = 0;
  while (begin < token_end.size() && token_end[begin] < 10) ++begin;
  size_t start = token_end[begin] - 1;  // last char of token `begin`
  std::string stop = full.substr(start, 3);
  size_t first = full.find(stop);
  params.stop = {stop};
  RequestId id = Add(prompt, params);
  Run();
  const Collected& c = collected_[id];
  EXPECT_EQ(c.last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(c.last.stop_string, stop);
  EXPECT_EQ(c.text, full.substr(0, first));
  // Generation stopped at the token that completed the stop string.
  size_t completing = 0;
  while (token_end[completing] < first + stop.size()) ++completing;
  EXPECT_EQ(c.tokens, std::vector<TokenId>(ref.begin(), ref.begin() + completing + 1));
}

TEST_F(EngineTest, TextStreamsWithoutStopsAndFlushesAtLength) {
  Init({.num_blocks = 64, .block_size = 16});
  std::vector<TokenId> prompt = Prompts(1, 5, 20, 21)[0];
  SamplingParams params = Greedy(30);
  params.ignore_eos = true;
  params.stop = {"zzzzzz"};  // never matches, but makes the checker hold back "z" runs
  RequestId id = Add(prompt, params);
  Run();
  // The tokenizer's own incremental decoder: a lone continuation byte (token 2) becomes U+FFFD.
  IncrementalDecoder decoder(tokenizer_);
  std::string expected;
  for (TokenId t : ReferenceGreedy(*fake_, prompt, 30)) expected += decoder.Push(t);
  expected += decoder.Flush();
  EXPECT_EQ(collected_[id].text, expected);
  EXPECT_EQ(collected_[id].last.finish_reason, FinishReason::kLength);
}

TEST_F(EngineTest, EosMinTokensIgnoreEosAndStopTokenIds) {
  Init({.num_blocks = 64, .block_size = 16});
  std::vector<TokenId> prompt = {5, 6, 7};
  SamplingParams eos = Greedy(10);
  eos.logit_bias = {{kEos, 100.0f}};  // EOS is always the argmax
  RequestId plain = Add(prompt, eos);
  SamplingParams min = eos;
  min.min_tokens = 4;
  RequestId with_min = Add(prompt, min);
  SamplingParams ignore = eos;
  ignore.ignore_eos = true;
  RequestId ignoring = Add(prompt, ignore);
  SamplingParams stop_id = Greedy(10);
  stop_id.logit_bias = {{42, 100.0f}};
  stop_id.stop_token_ids = {42};
  RequestId stopping = Add(prompt, stop_id);
  Run();
  EXPECT_EQ(collected_[plain].tokens, std::vector<TokenId>{kEos});
  EXPECT_EQ(collected_[plain].last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(collected_[plain].last.stop_token, kEos);
  ASSERT_EQ(collected_[with_min].tokens.size(), 5u);  // 4 forced non-EOS, then EOS
  EXPECT_EQ(collected_[with_min].tokens.back(), kEos);
  EXPECT_EQ(
      std::count(collected_[with_min].tokens.begin(), collected_[with_min].tokens.end(), kEos), 1);
  EXPECT_EQ(collected_[ignoring].tokens, std::vector<TokenId>(10, kEos));
  EXPECT_EQ(collected_[ignoring].last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(collected_[stopping].tokens, std::vector<TokenId>{42});
  EXPECT_EQ(collected_[stopping].text, "");  // the stop token's text is not emitted
  EXPECT_EQ(collected_[stopping].last.finish_reason, FinishReason::kStop);
}

TEST_F(EngineTest, LogprobsAndTimingAreReported) {
  double now = 0;
  EngineConfig config{.num_blocks = 64, .block_size = 16};
  config.clock = [&now] { return now += 0.5; };
  Init(config);
  SamplingParams params = Greedy(5);
  params.ignore_eos = true;
  params.logprobs = 3;
  RequestId id = Add({3, 4, 5}, params);
  Run();
  const Collected& c = collected_[id];
  ASSERT_EQ(c.logprobs.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    ASSERT_EQ(c.logprobs[i].top.size(), 3u);
    EXPECT_EQ(c.logprobs[i].top[0].token, c.tokens[i]);  // greedy: the best one
    EXPECT_FLOAT_EQ(c.logprobs[i].logprob, c.logprobs[i].top[0].logprob);
    EXPECT_LT(c.logprobs[i].logprob, 0.0f);
  }
  ASSERT_EQ(c.token_times.size(), 5u);
  EXPECT_LT(c.last.arrival_time_s, c.last.first_token_time_s);
  EXPECT_EQ(c.last.first_token_time_s, c.token_times[0]);
  for (size_t i = 1; i < 5; ++i) EXPECT_LT(c.token_times[i - 1], c.token_times[i]);
}

TEST_F(EngineTest, CancelFreesBlocksAtOnce) {
  Init({.num_blocks = 64, .block_size = 16, .enable_prefix_caching = false});
  SamplingParams params = Greedy(1000);
  params.ignore_eos = true;
  RequestId id = Add(Prompts(1, 6, 200, 201)[0], params);
  RequestId waiting = Add({1, 2, 3}, params);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(engine_->Step().ok());
  EXPECT_LT(engine_->block_stats().num_free_blocks, 64);
  engine_->Cancel(id);
  engine_->Cancel(waiting);
  engine_->Cancel(12345);  // unknown: ignored
  EXPECT_EQ(engine_->block_stats().num_free_blocks, 64);
  Drain();
  EXPECT_EQ(collected_[id].last.finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(collected_[id].num_finished_messages, 1);
  EXPECT_EQ(collected_[waiting].last.finish_reason, FinishReason::kCancelled);
}

TEST_F(EngineTest, ExecutorFailureFinishesTheBatchWithError) {
  Init({.num_blocks = 64, .block_size = 16});
  RequestId a = Add({3, 4, 5}, Greedy(5));
  fake_->FailNextStep();
  EXPECT_FALSE(engine_->Step().ok());
  Drain();
  EXPECT_EQ(collected_[a].last.finish_reason, FinishReason::kError);
  EXPECT_NE(collected_[a].last.error.find("injected"), std::string::npos);
}

TEST_F(EngineTest, RejectsInvalidRequestsAndStopsAtContextLength) {
  Init({.num_blocks = 8, .block_size = 16, .max_model_len = 40});
  EXPECT_EQ(engine_->AddRequest({{}, Greedy(5)}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->AddRequest({{kVocab}, Greedy(5)}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->AddRequest({std::vector<TokenId>(40, 3), Greedy(5)}).status().code(),
            StatusCode::kInvalidArgument);
  SamplingParams bad = Greedy(5);
  bad.top_p = 0;
  EXPECT_FALSE(engine_->AddRequest({{3}, bad}).ok());
  SamplingParams params = Greedy(100);
  params.ignore_eos = true;
  RequestId id = Add(std::vector<TokenId>(30, 3), params);
  Run();
  EXPECT_EQ(collected_[id].tokens.size(), 10u);
  EXPECT_EQ(collected_[id].last.finish_reason, FinishReason::kLength);
}

TEST_F(EngineTest, MaxModelLenBeyondCapacityFailsWithCapacity) {
  Init({.num_blocks = 4, .block_size = 16, .max_model_len = 1000});
  SamplingParams params = Greedy(500);
  params.ignore_eos = true;
  RequestId id = Add(std::vector<TokenId>(100, 3), params);
  Run();
  EXPECT_EQ(collected_[id].last.finish_reason, FinishReason::kCapacity);
}

TEST_F(EngineTest, PrefilledRequestContinuesFromShippedKv) {
  Init({.num_blocks = 64, .block_size = 16});
  std::vector<TokenId> prompt = Prompts(1, 7, 50, 51)[0];
  std::vector<TokenId> ref = ReferenceGreedy(*fake_, prompt, 6, kEos);
  auto blocks = engine_->AllocateBlocks(4);  // 51 tokens
  ASSERT_TRUE(blocks.has_value());
  fake_->WriteKv(*blocks, prompt, 0);  // what a prefill worker would have shipped
  auto id = engine_->AddPrefilledRequest({prompt, Greedy(6)}, {ref[0]}, *blocks, 50);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  const int64_t computed_before = fake_->num_tokens_computed();
  Run();
  EXPECT_EQ(fake_->num_tokens_computed() - computed_before, int64_t(ref.size()) - 1);
  std::vector<TokenId> got = {ref[0]};
  got.insert(got.end(), collected_[*id].tokens.begin(), collected_[*id].tokens.end());
  EXPECT_EQ(got, ref);
}

// A request handed over after k tokens (the first engine stops at k holding back its text, the
// next continues after those k tokens, as a prefill worker and a decode worker do, or a migrated
// request) streams exactly the tokens and text of one uninterrupted run: the seeded random
// stream continues at draw k, and a stop string that starts before the hand-over and ends after
// it is still caught, with none of its text emitted.
TEST_F(EngineTest, ContinuationAfterEarlierTokensMatchesAnUninterruptedRun) {
  Init({.num_blocks = 64, .block_size = 16});
  const std::vector<TokenId> prompt = Prompts(1, 6, 20, 21)[0];
  SamplingParams params;
  params.temperature = 0.9f;
  params.top_k = 50;
  params.max_tokens = 24;
  params.ignore_eos = true;
  params.seed = 77;
  const RequestId whole = Add(prompt, params);
  Run();
  const std::vector<TokenId> full = collected_[whole].tokens;
  ASSERT_EQ(full.size(), 24u);
  ASSERT_NE(full, ReferenceGreedy(*fake_, prompt, 24)) << "sampling looks greedy";
  std::string text;
  const std::vector<size_t> token_end = TextEnds(full, &text);
  // A stop string from the last character of token b to two characters into the rest.
  size_t b = 0;
  while (b + 2 < token_end.size() && (token_end[b] < 8 || token_end[b + 1] - token_end[b] < 2)) ++b;
  ASSERT_LT(b + 2, token_end.size());
  const std::string stop = text.substr(token_end[b] - 1, 3);
  const size_t first = text.find(stop);
  ASSERT_EQ(first, token_end[b] - 1) << "pick a stop string that occurs once";

  for (bool with_stop : {false, true}) {
    SCOPED_TRACE(with_stop ? "stop string across the hand-over" : "no stop string");
    SamplingParams p = params;
    if (with_stop) p.stop = {stop};
    const RequestId uninterrupted = Add(prompt, p);
    Run();
    const Collected& u = collected_[uninterrupted];
    // Hand over after token b: the stop string's first character is held back there.
    Request head{prompt, p};
    head.params.max_tokens = int32_t(b) + 1;
    head.hold_text_at_length = true;
    auto head_id = engine_->AddRequest(head);
    ASSERT_TRUE(head_id.ok());
    Run();
    const Collected& h = collected_[*head_id];
    ASSERT_EQ(h.tokens, std::vector<TokenId>(full.begin(), full.begin() + ptrdiff_t(b) + 1));
    auto tail_id = engine_->AddRequest({prompt, p}, h.tokens);
    ASSERT_TRUE(tail_id.ok()) << tail_id.status().ToString();
    Run();
    const Collected& t = collected_[*tail_id];
    std::vector<TokenId> joined = h.tokens;
    joined.insert(joined.end(), t.tokens.begin(), t.tokens.end());
    EXPECT_EQ(joined, u.tokens);
    EXPECT_EQ(h.text + t.text, u.text);
    EXPECT_EQ(t.last.finish_reason, u.last.finish_reason);
    if (with_stop) {
      EXPECT_EQ(u.last.finish_reason, FinishReason::kStop);
      EXPECT_EQ(u.text, text.substr(0, first));
      EXPECT_EQ(h.text, text.substr(0, first)) << "the held-back character was not held";
    } else {
      EXPECT_EQ(u.tokens, full);
    }
  }
  // Earlier tokens leave none of max_tokens: refused.
  EXPECT_FALSE(engine_->AddRequest({prompt, params}, full).ok());
}

TEST_F(EngineTest, AddCancelAndPollFromAnotherThread) {
  Init({.num_blocks = 48, .block_size = 16});
  std::atomic<bool> stop{false};
  std::thread loop([&] {
    while (!stop) {
      ASSERT_TRUE(engine_->Step().ok());
      if (!engine_->HasUnfinished()) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  });
  auto prompts = Prompts(40, 8, 5, 120);
  std::map<RequestId, size_t> which;
  std::set<RequestId> cancelled;
  size_t finished = 0;
  auto drain = [&] {
    for (RequestOutput& out : engine_->PollOutputs()) {
      Collected& c = collected_[out.request_id];
      c.tokens.insert(c.tokens.end(), out.token_ids.begin(), out.token_ids.end());
      if (out.finished) {
        ++finished;
        c.last = std::move(out);
      }
    }
  };
  for (size_t i = 0; i < prompts.size(); ++i) {
    RequestId id = Add(prompts[i], Greedy(16));
    which[id] = i;
    if (i % 7 == 3) {
      engine_->Cancel(id);
      cancelled.insert(id);
    }
    if (i % 5 == 0) engine_->WaitForOutputs(std::chrono::milliseconds(2));
    drain();
  }
  while (finished < prompts.size()) {
    engine_->WaitForOutputs(std::chrono::milliseconds(100));
    drain();
  }
  stop = true;
  loop.join();
  for (auto& [id, i] : which) {
    if (collected_[id].last.finish_reason == FinishReason::kCancelled) continue;
    EXPECT_FALSE(cancelled.count(id));
    EXPECT_EQ(collected_[id].tokens, ReferenceGreedy(*fake_, prompts[i], 16, kEos));
  }
}

}  // namespace
}  // namespace cleave
