// End to end: `cleave plan --colocated-policy` parses its two values, says in the JSON which
// policy each colocated candidate used, and rejects anything else with a clear error.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

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

}  // namespace
}  // namespace cleave
