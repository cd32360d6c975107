// `cleave generate` end to end: the real binary on the default model, greedy, with a chat prompt,
// must print exactly the text of the independent reference's greedy continuation.
#include <gtest/gtest.h>

#include <cstdio>

#include "model/model.h"
#include "tests/testing/llama_reference.h"
#include "tests/testing/paths.h"

namespace cleave {
namespace {

std::string RunCommand(const std::string& cmd, int* exit_code) {
  FILE* pipe = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  *exit_code = ::pclose(pipe);
  return out;
}

TEST(GenerateE2eTest, GreedyChatOutputMatchesReference) {
  const std::string path = testing::DefaultModelPath();
  if (path.empty()) GTEST_SKIP() << "default model not installed: run scripts/setup.sh";
  if (testing::ReferencePython().empty())
    GTEST_SKIP() << "reference env missing: run scripts/setup.sh";
  constexpr int kTokens = 40;
  const std::string question = "What is the capital of France?";

  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const Tokenizer& tok = (*model)->tokenizer();
  nlohmann::json messages = nlohmann::json::array({{{"role", "user"}, {"content", question}}});
  auto text = (*model)->chat_template().Render(messages, ChatRenderOptions{});
  ASSERT_TRUE(text.ok());
  std::vector<TokenId> prompt = tok.Encode(*text, /*add_special=*/false, /*parse_special=*/true);
  auto ref = testing::RunLlamaReference(path, prompt, kTokens);
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();
  std::vector<TokenId> expected;
  for (TokenId id : ref->greedy) {
    if (tok.IsEog(id)) break;
    expected.push_back(id);
  }
  const std::string expected_text = tok.Decode(expected, /*skip_special=*/true);

  int rc = 0;
  const std::string out =
      RunCommand(fmt::format("'{}' generate -m '{}' --chat -p '{}' -n {} --temp 0 2>/dev/null",
                             testing::CleaveBinary(), path, question, kTokens),
                 &rc);
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(out, expected_text + "\n");
  EXPECT_NE(out.find("Paris"), std::string::npos) << out;
}

TEST(GenerateE2eTest, MissingModelFileIsAClearError) {
  int rc = 0;
  const std::string out = RunCommand(
      fmt::format("'{}' generate -m /nonexistent/model.gguf -p hi 2>&1", testing::CleaveBinary()),
      &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("does not exist"), std::string::npos) << out;
}

}  // namespace
}  // namespace cleave
