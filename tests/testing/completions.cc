#include "tests/testing/completions.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "tests/testing/paths.h"

namespace cleave::testing {

std::string ServeTestPrerequisitesMissing() {
  if (!std::filesystem::exists(CleaveBinary())) return "cleave binary not built";
  if (DefaultModelPath().empty()) return "default model not installed";
  return "";
}

void ExpectSameCompletions(const std::vector<Completion>& want, const std::vector<Completion>& got,
                           const std::string& what) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(want[i].status, 200) << want[i].error;
    EXPECT_EQ(got[i].status, 200) << what << " request " << i << ": " << got[i].error;
    EXPECT_TRUE(got[i].error.empty()) << what << " request " << i << ": " << got[i].error;
    EXPECT_EQ(got[i].tokens, want[i].tokens) << what << " request " << i;
    EXPECT_EQ(got[i].text, want[i].text) << what << " request " << i;
    EXPECT_EQ(got[i].finish_reason, want[i].finish_reason) << what << " request " << i;
  }
}

void ExpectAllKvBlocksFree(const ServerProcess& server) {
  double free_blocks = -1, total = -2;
  for (int i = 0; i < 50 && free_blocks != total; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    free_blocks = MetricValue(server.port(), "cleave:kv_free_blocks");
    total = MetricValue(server.port(), "cleave:kv_total_blocks");
  }
  EXPECT_GT(total, 0);
  EXPECT_EQ(free_blocks, total) << server.LogTail();
}

}  // namespace cleave::testing
