#include "planner/search.h"

#include <gtest/gtest.h>

#include "bench/metrics.h"

namespace cleave::planner {
namespace {

// Fixed arrivals into one instance with a constant service time s: below the service rate no
// request waits (TTFT = s); above it request k waits k (s - 1/r). With TTFT SLO 1.5 s, 90%
// attainment over N requests holds exactly while the 0.9 N-th request waits at most 0.5 s:
// r* = 1 / (s (1 - 0.5 / (0.9 N - 1))). The bisection must land on it.
TEST(Search, BisectionFindsKnownThreshold) {
  const double s = 0.1;
  const int64_t n = 1000;
  FittedCostModel cost({1, {s, 0, 0}, {s, 0, 0}}, 1 << 20, 16);
  SimCluster cluster;
  SimInstance inst{&cost};
  inst.scheduler.max_seqs = 1;
  cluster.colocated.push_back(inst);
  PlanWorkload w;
  w.lengths = {{64, 1}};
  w.arrivals.kind = bench::ArrivalKind::kFixed;
  bench::Slo slo;
  slo.ttft_ms = 1.5 * s * 1e3;
  auto attainment_at = [&](double rate) -> Result<double> {
    CLEAVE_ASSIGN_OR_RETURN(SimResult r, Simulate(cluster, MakeRequests(w, rate, n, 1)));
    return bench::Attainment(r.records, slo);
  };
  auto g = bench::FindGoodput(attainment_at, 0.9, 0, 40, 1e-4);
  ASSERT_TRUE(g.ok());
  const double expected = 1 / (s * (1 - 0.5 / (0.9 * n - 1)));
  EXPECT_NEAR(g->goodput_rps, expected, 2e-3 * expected);
  EXPECT_GT(g->goodput_rps, 1 / s);  // a finite run tolerates a little overload
}

PlanSpec Opt13bSpec() {
  PlanSpec spec;
  spec.shape = *BuiltinModelShape("opt-13b");
  spec.gpu = *BuiltinGpu("a100");
  spec.nodes = 1;
  spec.gpus_per_node = 8;
  spec.workload = *LoadPlanWorkload("chatbot", 400, 0, spec.shape.max_context);
  spec.slo.ttft_ms = 250;
  spec.slo.tpot_ms = 100;
  spec.num_requests = 200;
  spec.max_instance_scale = 2;
  spec.top_per_phase = 2;
  spec.alg2 = false;
  return spec;
}

// DistServe §6.2: OPT-13B chatbot on A100s with TTFT 0.25 s / TPOT 0.1 s. The paper picks
// prefill TP2 and decode TP1 (3 GPUs). Under the calibrated roofline, chunked-prefill
// colocation leads disaggregation by 5-10% per GPU for 13B (docs/planner.md), so this checks
// the parts that are robust: both families are found, within 20% of each other, and the best
// disaggregated placement prefills with TP2.
TEST(Search, Opt13bChatbotPicksPaperPrefillParallelism) {
  auto result = SearchPlacements(Opt13bSpec());
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  const PlanCandidate* best_colocated = nullptr;
  const PlanCandidate* best_disagg = nullptr;
  for (const PlanCandidate& c : result->ranked) {
    auto& slot = c.kind == PlanKind::kColocated ? best_colocated : best_disagg;
    if (slot == nullptr) slot = &c;
  }
  ASSERT_NE(best_colocated, nullptr);
  ASSERT_NE(best_disagg, nullptr);
  EXPECT_GT(best_colocated->per_gpu, 0);
  EXPECT_GT(best_disagg->per_gpu, 0.8 * best_colocated->per_gpu);
  EXPECT_EQ(best_disagg->prefill.tp, 2) << best_disagg->Describe();
  EXPECT_EQ(best_disagg->prefill.pp, 1) << best_disagg->Describe();
  for (size_t i = 1; i < result->ranked.size(); ++i) {
    EXPECT_GE(result->ranked[i - 1].per_gpu, result->ranked[i].per_gpu);
  }
}

TEST(Search, WorkloadLengthsAreCapped) {
  auto w = LoadPlanWorkload("summarization", 50, 3, 1024);
  ASSERT_TRUE(w.ok());
  for (auto [in, out] : w->lengths) EXPECT_LE(in + out, 1024);
  EXPECT_FALSE(LoadPlanWorkload("no-such-workload", 10, 0, 2048).ok());
}

}  // namespace
}  // namespace cleave::planner
