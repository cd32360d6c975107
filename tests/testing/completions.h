// Shared checks of the cleave serve end-to-end tests (disaggregation, failover): a completion as
// the client saw it, token-for-token comparison against a reference run, and the KV-leak check.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/testing/server_process.h"

namespace cleave::testing {

struct Completion {
  int status = 0;
  std::string text;
  std::vector<std::string> tokens;  // one per generated token (logprobs)
  std::string finish_reason;
  std::string error;
};

// Non-empty (the reason) when the cleave binary or the default model is missing.
std::string ServeTestPrerequisitesMissing();

// Fixture of the tests that start `cleave serve`: skips them when ServeTestPrerequisitesMissing.
class CleaveServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string missing = ServeTestPrerequisitesMissing();
    if (!missing.empty()) GTEST_SKIP() << missing;
  }
};

// Every completion of `got` succeeded and equals `want` token for token (text, finish reason).
void ExpectSameCompletions(const std::vector<Completion>& want, const std::vector<Completion>& got,
                           const std::string& what);

// Every KV block of the server (its workers included) is free again; workers report every
// 100 ms, so this waits up to 5 s for the counts to settle.
void ExpectAllKvBlocksFree(const ServerProcess& server);

}  // namespace cleave::testing
