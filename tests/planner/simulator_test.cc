#include "planner/simulator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "bench/arrivals.h"
#include "engine/block_pool.h"
#include "engine/sequence.h"

namespace cleave::planner {
namespace {

// One instance, one sequence at a time, every request one prefill step of constant length:
// an M/D/1 queue. Mean wait in queue = rho / (2 mu (1 - rho)).
TEST(Simulator, ReproducesMD1QueueingDelay) {
  const double service_s = 0.1;
  FittedCostModel cost({1, {service_s, 0, 0}, {service_s, 0, 0}}, 1 << 20, 16);
  SimCluster cluster;
  SimInstance inst;
  inst.cost = &cost;
  inst.scheduler.max_seqs = 1;
  cluster.colocated.push_back(inst);
  for (double rho : {0.5, 0.8}) {
    const double rate = rho / service_s;
    const int64_t n = 200000;
    auto times = bench::ArrivalTimes({bench::ArrivalKind::kPoisson, rate, 1.0}, n, 42);
    std::vector<SimRequest> requests;
    for (double t : times) requests.push_back({t, 32, 1});
    auto result = Simulate(cluster, requests);
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    double wait = 0;
    for (const auto& r : result->records) {
      ASSERT_TRUE(r.success);
      wait += r.ttft_s - service_s;
    }
    wait /= double(n);
    const double mu = 1 / service_s;
    const double expected = rho / (2 * mu * (1 - rho));
    EXPECT_NEAR(wait, expected, 0.04 * expected) << "rho " << rho;
    EXPECT_EQ(result->num_steps, n);
  }
}

// Decode steps of a constant length: a lone request with k output tokens has TPOT = step time.
TEST(Simulator, DisaggregatedRequestTimeline) {
  FittedCostModel prefill({1, {0.05, 0, 0}, {0.05, 0, 0}}, 4096, 1000);
  FittedCostModel decode({1, {0.01, 0, 0}, {0.01, 0, 0}}, 4096, 1000);
  SimCluster cluster;
  cluster.prefill.push_back({&prefill});
  cluster.decode.push_back({&decode});
  cluster.same_node_bw = 1e6;  // 100 prompt tokens x 1000 B = 0.1 s (+ setup)
  cluster.cross_node_bw = 1e6;
  auto result = Simulate(cluster, {{0, 100, 5}});
  ASSERT_TRUE(result.ok());
  const auto& r = result->records[0];
  ASSERT_TRUE(r.success);
  EXPECT_NEAR(r.ttft_s, 0.05, 1e-9);
  ASSERT_EQ(r.chunk_times_s.size(), 5u);
  // Second token: transfer (0.1 s) then one decode step.
  EXPECT_NEAR(r.chunk_times_s[1], 0.05 + 0.1 + 0.01, 1e-3);
  EXPECT_NEAR(r.chunk_times_s[4] - r.chunk_times_s[1], 3 * 0.01, 1e-9);
  EXPECT_NEAR(result->mean_transfer_s, 0.1, 1e-3);
}

// Pull-based admission: a decode instance with room for one request at a time admits the next
// only after the previous finishes; the prefill instance holds the waiting KV meanwhile.
TEST(Simulator, PullAdmissionWaitsForDecodeBlocks) {
  FittedCostModel prefill({1, {0.01, 0, 0}, {0.01, 0, 0}}, 4096, 10);
  FittedCostModel decode({1, {0.01, 0, 0}, {0.01, 0, 0}}, 48, 10);  // 3 blocks of 16
  SimCluster cluster;
  cluster.prefill.push_back({&prefill});
  cluster.decode.push_back({&decode});
  cluster.same_node_bw = cluster.cross_node_bw = 1e12;
  std::vector<SimRequest> reqs = {{0, 20, 10}, {0, 20, 10}};
  auto result = Simulate(cluster, reqs);
  ASSERT_TRUE(result.ok());
  const auto& a = result->records[0];
  const auto& b = result->records[1];
  ASSERT_TRUE(a.success && b.success);
  EXPECT_EQ(result->num_preemptions, 0);
  // b's second token comes after a's last one: it could not be admitted earlier.
  EXPECT_GT(b.chunk_times_s[1], a.chunk_times_s.back());
}

TEST(Simulator, ChunkedPrefillInColocatedInstance) {
  // Prefill cost linear in tokens: a 1000-token prompt with a 256-token budget takes 4 steps.
  FittedCostModel cost({1, {0.0, 1e-3, 0}, {0.001, 0, 0}}, 1 << 16, 16);
  SimCluster cluster;
  SimInstance inst{&cost};
  inst.scheduler.max_batch_tokens = 256;
  cluster.colocated.push_back(inst);
  auto result = Simulate(cluster, {{0, 1000, 2}});
  ASSERT_TRUE(result.ok());
  EXPECT_NEAR(result->records[0].ttft_s, 1.0, 1e-9);
  EXPECT_EQ(result->num_steps, 4 + 1);
}

// The scheduler policy behind `cleave plan --colocated-policy whole-prompt`: a step that can
// admit prompts runs only whole prompts; decodes wait for a step with nothing to admit.
TEST(WholePromptPolicy, SchedulerRunsWholePromptsAlone) {
  for (bool prefill_first : {false, true}) {
    BlockPool pool(64, 16, /*enable_prefix_caching=*/false);
    Scheduler sched({.max_batch_tokens = 150, .prefill_first = prefill_first}, &pool);
    auto seq = [](RequestId id, int32_t prompt) {
      return std::make_unique<Sequence>(id, std::vector<TokenId>(size_t(prompt), 0),
                                        SamplingParams{}, 0, uint64_t(id), 0.0);
    };
    sched.Add(seq(1, 8));
    ScheduledBatch first = sched.Schedule();
    ASSERT_EQ(first.seqs.size(), 1u);
    sched.OnBatchComputed(first);
    sched.Find(1)->AppendToken(0);  // request 1 now decodes
    sched.Add(seq(2, 100));
    sched.Add(seq(3, 100));
    ScheduledBatch b = sched.Schedule();
    if (!prefill_first) {
      // Chunked: the decode, then prompt 2 and a 49-token chunk of prompt 3 fill the budget.
      ASSERT_EQ(b.seqs.size(), 3u);
      EXPECT_EQ(b.seqs[0].request_id, 1u);
      EXPECT_EQ(b.seqs[2].num_tokens, 49);
      continue;
    }
    // Whole prompts first: prompt 2 alone (prompt 3 does not fit whole; the decode waits).
    ASSERT_EQ(b.seqs.size(), 1u);
    EXPECT_EQ(b.seqs[0].request_id, 2u);
    EXPECT_EQ(b.seqs[0].num_tokens, 100);
    sched.OnBatchComputed(b);
    sched.Find(2)->AppendToken(0);
    b = sched.Schedule();
    ASSERT_EQ(b.seqs.size(), 1u);
    EXPECT_EQ(b.seqs[0].request_id, 3u);
    EXPECT_EQ(b.seqs[0].num_tokens, 100);
    sched.OnBatchComputed(b);
    sched.Find(3)->AppendToken(0);
    b = sched.Schedule();  // nothing to admit: everyone decodes
    ASSERT_EQ(b.seqs.size(), 3u);
    for (const ScheduledSeq& s : b.seqs) EXPECT_EQ(s.num_tokens, 1);
  }
}

// Four requests decode when a 4096-token prompt arrives. Whole-prompt scheduling (vLLM 0.2)
// runs the prompt as one step and every decode waits for it; chunked prefill feeds it in
// 512-token chunks that the decodes ride, so no token waits for the whole prompt and, since
// the chunks' steps also do the decodes' work, the decodes' TPOT is strictly lower.
TEST(WholePromptPolicy, LongPromptStallsDecodesOnlyWithoutChunking) {
  // Prefill 20 ms + 0.1 ms/token (4096 tokens: 430 ms); a decode step 20 ms.
  FittedCostModel cost({1, {0.02, 1e-4, 0}, {0.02, 0, 0}}, 1 << 16, 16);
  const double long_prefill_s = cost.PrefillTime(4096, 4096.0 * 4096);
  std::vector<SimRequest> requests;
  for (int i = 0; i < 4; ++i) requests.push_back({0, 16, 100});
  requests.push_back({0.5, 4096, 2});
  struct Outcome {
    double mean_tpot_s = 0, max_gap_s = 0, long_ttft_s = 0;
  };
  auto run = [&](bool whole_prompt) {
    SimCluster cluster;
    SimInstance inst{&cost};
    inst.scheduler.max_batch_tokens = whole_prompt ? 8192 : 512;
    inst.scheduler.prefill_first = whole_prompt;
    cluster.colocated.push_back(inst);
    auto result = Simulate(cluster, requests);
    EXPECT_TRUE(result.ok()) << result.status().ToString();
    Outcome o;
    for (int i = 0; i < 4; ++i) {
      const bench::RequestRecord& r = result->records[i];
      EXPECT_TRUE(r.success);
      EXPECT_EQ(r.chunk_times_s.size(), 100u);
      o.mean_tpot_s += bench::Tpot(r).value_or(0) / 4;
      for (size_t k = 1; k < r.chunk_times_s.size(); ++k) {
        o.max_gap_s = std::max(o.max_gap_s, r.chunk_times_s[k] - r.chunk_times_s[k - 1]);
      }
    }
    o.long_ttft_s = result->records[4].ttft_s;
    return o;
  };
  const Outcome chunked = run(false);
  const Outcome whole = run(true);
  EXPECT_GT(whole.mean_tpot_s, chunked.mean_tpot_s);
  EXPECT_GE(whole.max_gap_s, long_prefill_s);          // one token waited for the whole prompt
  EXPECT_LT(chunked.max_gap_s, 0.5 * long_prefill_s);  // chunks: ~70 ms between tokens
  EXPECT_LT(whole.long_ttft_s, chunked.long_ttft_s);   // what whole prompts buy: the long TTFT
}

TEST(Simulator, RejectsBadInput) {
  EXPECT_FALSE(Simulate({}, {}).ok());
  FittedCostModel cost({1, {0.1, 0, 0}, {0.1, 0, 0}}, 1024, 16);
  SimCluster c;
  c.colocated.push_back({&cost});
  EXPECT_FALSE(Simulate(c, {{1, 1, 1}, {0, 1, 1}}).ok());
  EXPECT_FALSE(Simulate(c, {{0, 0, 1}}).ok());
}

}  // namespace
}  // namespace cleave::planner
