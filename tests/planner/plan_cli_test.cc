// End to end: `cleave plan --colocated-policy` parses its two values, says in the JSON which
// policy each colocated candidate used, and rejects anything else with a clear error; `cleave
// profile --fit` runs its prefill and engine-step decode timings and writes a fit `cleave plan`
// loads.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "planner/cost_model.h"
#include "tests/testing/paths.h"
#include "tests/testing/run_cleave.h"

namespace cleave {
namespace {

using testing::RunCleave;
using RunResult = testing::CommandResult;

// A small colocated-only search: OPT-13B on two A100s, few requests per probe.
constexpr const char* kSmallPlan =
    "plan --model opt-13b --hardware a100 --nodes 1 --gpus-per-node 2 --workload chatbot "
    "--ttft 0.25 --tpot 0.1 --only colocated --num-requests 40 --search-threads 2";

class PlanCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(testing::CleaveBinary())) {
      GTEST_SKIP() << "cleave binary not built at " << testing::CleaveBinary()
                   << " (build target `cleave`)";
    }
  }
};

TEST_F(PlanCli, ColocatedPolicyReachesEveryCandidate) {
  for (std::string policy : {"chunked", "whole-prompt"}) {
    RunResult r = RunCleave(std::string(kSmallPlan) + " --json --colocated-policy " + policy);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.out;
    EXPECT_EQ(j["colocated_policy"], policy);
    ASSERT_FALSE(j["candidates"].empty());
    for (const auto& c : j["candidates"]) {
      EXPECT_EQ(c["kind"], "colocated");
      EXPECT_EQ(c["colocated_policy"], policy);
      // whole-prompt runs at vLLM's default budget, max(max_context, 2048); chunked searches
      // its three budgets.
      if (policy == "whole-prompt") {
        EXPECT_EQ(c["max_batch_tokens"], 2048);
      }
    }
  }
  // The table names the policy in each colocated row.
  RunResult r = RunCleave(std::string(kSmallPlan) + " --colocated-policy whole-prompt");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("colocated policy whole-prompt"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[colocated] colocated TP1 PP1, whole-prompt 2048"), std::string::npos)
      << r.out;
}

TEST_F(PlanCli, RejectsUnknownColocatedPolicy) {
  RunResult r = RunCleave(std::string(kSmallPlan) + " --colocated-policy vllm");
  EXPECT_NE(r.exit_code, 0);
  const std::string all = r.out + r.err;
  EXPECT_NE(all.find("--colocated-policy"), std::string::npos) << all;
  EXPECT_NE(all.find("vllm"), std::string::npos) << all;
  EXPECT_NE(all.find("chunked"), std::string::npos) << all;
  EXPECT_NE(all.find("whole-prompt"), std::string::npos) << all;
  EXPECT_TRUE(r.out.find("candidates") == std::string::npos);  // no plan was printed
}

// `--gpu-profile` plans with measured step times: only its TP degrees appear, a model it lacks
// or a local plan is refused with a message that says why.
TEST_F(PlanCli, GpuProfileRestrictsTheSearchToItsTensorParallelism) {
  const std::string path = testing::TempDir() + "/gpu_profile.json";
  {
    std::ofstream f(path);
    f << R"({"facebook/opt-13b": {"2": {"prefill": [15, 0.07, 2e-6],
             "decoding_smallbs": [13, 0.0003, 0.06]}}})";
  }
  RunResult r = RunCleave(std::string(kSmallPlan) + " --json --gpu-profile " + path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.out;
  ASSERT_FALSE(j["candidates"].empty());
  for (const auto& c : j["candidates"]) EXPECT_EQ(c["prefill_tp"], 2) << c.dump();

  RunResult other = RunCleave(
      "plan --model opt-66b --hardware a100 --nodes 1 --gpus-per-node 8 --gpu-profile " + path);
  EXPECT_NE(other.exit_code, 0);
  EXPECT_NE(other.err.find("no entry for model 'opt-66b'"), std::string::npos) << other.err;
  RunResult local = RunCleave("plan --hardware local --profile x.json --gpu-profile " + path);
  EXPECT_NE(local.exit_code, 0);
  EXPECT_NE(local.err.find("--gpu-profile"), std::string::npos) << local.err;
}

// The fit's decode samples come from Engine::Step on the real model (sampler included): every
// coefficient a decode step depends on must come out, and the per-sequence one must be
// positive (a sampler or forward that stopped scaling with the batch would show here).
TEST_F(PlanCli, ProfileFitWritesAFitThatPlanLoads) {
  if (!std::filesystem::exists(testing::DefaultModelPath())) {
    GTEST_SKIP() << "default model missing: run scripts/setup.sh";
  }
  const std::string path = testing::TempDir() + "/profile_fit.json";
  RunResult r = RunCleave("profile -m " + testing::DefaultModelPath() + " -t 1 --fit " + path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto fit = planner::ProfileFit::Load(path);
  ASSERT_TRUE(fit.ok()) << fit.status().message();
  ASSERT_EQ(fit->fits.size(), 1u);
  const planner::ThreadFit& f = fit->fits[0];
  EXPECT_EQ(f.threads, 1);
  EXPECT_GT(f.decode.b, 0.0);
  EXPECT_GT(f.prefill.b, 0.0);
  EXPECT_GT(f.decode.Eval(16, 16 * 1024), f.decode.Eval(1, 32));
  EXPECT_LT(f.decode_rms_rel_error, 1.0);
  EXPECT_GT(fit->kv_bytes_per_token, 0);

  RunResult plan =
      RunCleave("plan --model " + testing::DefaultModelPath() + " --hardware local --profile " +
                path + " --workload chatbot --ttft 2 --tpot 0.2 --num-requests 20 --json");
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  const nlohmann::json j = nlohmann::json::parse(plan.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << plan.out;
  EXPECT_FALSE(j["candidates"].empty());
}

}  // namespace
}  // namespace cleave
