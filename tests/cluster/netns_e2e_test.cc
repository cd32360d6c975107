// Multi-host end to end: runs tests/cluster/netns_e2e.sh, which puts the frontend, a prefill
// worker (--join) and a decode worker (--join) in three network namespaces joined by veth
// pairs and checks that greedy completions over cross-namespace TCP equal colocated ones.
// Skipped (with the script's reason) where namespaces cannot be created (not root, no iproute2).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "tests/testing/paths.h"

namespace cleave::cluster {
namespace {

TEST(NetnsE2eTest, FrontendAndJoinedWorkersOnThreeHostsMatchColocated) {
  if (!std::filesystem::exists(cleave::testing::CleaveBinary()))
    GTEST_SKIP() << "cleave binary not built";
  if (cleave::testing::DefaultModelPath().empty()) GTEST_SKIP() << "default model not installed";
  const std::string cmd = "timeout 240 " + cleave::testing::SourceDir() +
                          "/tests/cluster/netns_e2e.sh " + cleave::testing::CleaveBinary() + " " +
                          cleave::testing::DefaultModelPath() + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  std::array<char, 4096> buf;
  while (size_t n = std::fread(buf.data(), 1, buf.size(), pipe)) output.append(buf.data(), n);
  const int status = ::pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << output;
  EXPECT_EQ(WEXITSTATUS(status), 0) << output;
  std::printf("%s", output.c_str());
}

}  // namespace
}  // namespace cleave::cluster
