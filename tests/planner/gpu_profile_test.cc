#include "planner/gpu_profile.h"

#include <gtest/gtest.h>

#include <set>

#include "planner/search.h"

namespace cleave::planner {
namespace {

// Two TP degrees of a made-up profile in DistServe's format (milliseconds).
constexpr const char* kProfile = R"({
  "facebook/opt-13b": {
    "1": {"prefill": [20, 0.1, 1e-5], "decoding_smallbs": [20, 0.001, 0.05],
          "decoding_largebs": [10, 0.002, 0.2], "decoding_large_small_bs_threshold": 95},
    "2": {"prefill": [15, 0.06, 4e-6], "decoding_smallbs": [13, 0.0005, 0.06]}
  },
  "facebook/opt-66b": {"4": {"prefill": [30, 0.15, 8e-6], "decoding_smallbs": [30, 0.0005, 0.06]}}
})";

TEST(GpuProfile, ParsesFormsInSecondsAndPicksTheModelByName) {
  auto p = GpuProfileFromJson(kProfile, "opt-13b");
  ASSERT_TRUE(p.ok()) << p.status().message();
  ASSERT_EQ(p->size(), 2u);
  const GpuStepProfile& tp1 = p->at(1);
  EXPECT_DOUBLE_EQ(tp1.prefill.Eval(512, 512.0 * 512), (20 + 0.1 * 512 + 1e-5 * 512 * 512) * 1e-3);
  EXPECT_EQ(tp1.large_batch_threshold, 95);
  EXPECT_DOUBLE_EQ(tp1.Decode(94).a, 0.020);
  EXPECT_DOUBLE_EQ(tp1.Decode(95).a, 0.010);
  // Without a large-batch set the small one serves every batch.
  EXPECT_DOUBLE_EQ(p->at(2).Decode(500).b, 0.0005e-3);
  EXPECT_TRUE(GpuProfileFromJson(kProfile, "facebook/opt-66b").ok());
  EXPECT_TRUE(GpuProfileFromJson(kProfile, "OPT-66B").ok());
}

TEST(GpuProfile, BadInputSaysWhat) {
  auto missing = GpuProfileFromJson(kProfile, "opt-175b");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("facebook/opt-13b"), std::string::npos);
  for (const char* bad : {
           "[]",
           "not json",
           R"({"m": {"x": {"prefill": [1, 2, 3], "decoding_smallbs": [1, 2, 3]}}})",
           R"({"m": {"0": {"prefill": [1, 2, 3], "decoding_smallbs": [1, 2, 3]}}})",
           R"({"m": {"1": {"prefill": [1, 2], "decoding_smallbs": [1, 2, 3]}}})",
           R"({"m": {"1": {"prefill": [1, 2, 3]}}})",
           R"({"m": {"1": {"prefill": [1, 2, 3], "decoding_smallbs": [1, 2, 3],
                           "decoding_largebs": [1, 2, 3]}}})",
           R"({"m": {}})",
       }) {
    EXPECT_FALSE(GpuProfileFromJson(bad, "m").ok()) << bad;
  }
}

TEST(GpuProfile, StepTimesFollowTheProfile) {
  auto profile = GpuProfileFromJson(kProfile, "opt-13b");
  ASSERT_TRUE(profile.ok());
  const ModelShape shape = *BuiltinModelShape("opt-13b");
  const GpuSpec gpu = *BuiltinGpu("a100");
  RooflineCostModel roofline(shape, gpu, {1, 1});
  ProfiledGpuCostModel m(profile->at(1), roofline);
  EXPECT_EQ(m.kv_capacity_tokens(), roofline.kv_capacity_tokens());
  EXPECT_EQ(m.kv_bytes_per_token(), shape.kv_bytes_per_token());
  EXPECT_NEAR(m.PrefillTime(512, 512.0 * 512), (20 + 0.1 * 512 + 1e-5 * 512 * 512) * 1e-3, 1e-12);
  EXPECT_NEAR(m.DecodeTime(16, 16 * 600), (20 + 0.001 * 9600 + 0.05 * 16) * 1e-3, 1e-12);
  EXPECT_NEAR(m.DecodeTime(100, 100 * 600), (10 + 0.002 * 60000 + 0.2 * 100) * 1e-3, 1e-12);
  // Decodes riding a chunk go through its GEMMs and add their context reads.
  StepShape mixed{.prefill_tokens = 256,
                  .prefill_sq = 256.0 * 256,
                  .prefill_seqs = 1,
                  .decode_seqs = 8,
                  .decode_context = 8 * 500,
                  .largest_prefill_tokens = 256,
                  .largest_prefill_sq = 256.0 * 256};
  EXPECT_NEAR(m.StepTime(mixed), (20 + 0.1 * 264 + 1e-5 * (256.0 * 256 + 8) + 0.001 * 4000) * 1e-3,
              1e-12);
  // Two pipeline stages: a round is the larger micro-batch plus one hand-off, so four decodes
  // take the time of two (plus the hand-off), and capacity comes from the pipelined roofline.
  RooflineCostModel roofline_pp2(shape, gpu, {1, 2});
  ProfiledGpuCostModel pp2(profile->at(1), roofline_pp2);
  const double two = m.DecodeTime(2, 2 * 600);
  EXPECT_GT(pp2.DecodeTime(4, 4 * 600), two);
  EXPECT_LT(pp2.DecodeTime(4, 4 * 600), two + 1e-3);
  EXPECT_EQ(pp2.kv_capacity_tokens(), roofline_pp2.kv_capacity_tokens());
}

TEST(GpuProfile, SearchUsesOnlyProfiledTensorParallelism) {
  PlanSpec spec;
  spec.shape = *BuiltinModelShape("opt-13b");
  spec.gpu = *BuiltinGpu("a100");
  spec.nodes = 1;
  spec.gpus_per_node = 4;
  spec.gpu_profile = *GpuProfileFromJson(kProfile, "opt-13b");
  spec.workload = *LoadPlanWorkload("chatbot", 200, 0, spec.shape.max_context);
  spec.slo.ttft_ms = 250;
  spec.slo.tpot_ms = 100;
  spec.num_requests = 100;
  spec.max_requests = 300;
  spec.top_per_phase = 1;
  spec.alg2 = false;
  auto result = SearchPlacements(spec);
  ASSERT_TRUE(result.ok()) << result.status().message();
  std::set<int> tps;
  for (const PlanCandidate& c : result->ranked) {
    tps.insert(c.prefill.tp);
    if (c.family != "colocated") tps.insert(c.decode.tp);
  }
  EXPECT_EQ(tps, (std::set<int>{1, 2}));
  EXPECT_GT(result->ranked.front().per_gpu, 0);
  // A profile without any TP degree this model can use is an error that says so.
  spec.gpu_profile = *GpuProfileFromJson(R"({"opt-13b": {"3": {"prefill": [1, 1, 0],
      "decoding_smallbs": [1, 0, 0]}}})",
                                         "opt-13b");
  auto none = SearchPlacements(spec);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("GPU profile"), std::string::npos);
}

}  // namespace
}  // namespace cleave::planner
