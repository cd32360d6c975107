#include "planner/simulator.h"

#include <gtest/gtest.h>

#include "bench/arrivals.h"

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
