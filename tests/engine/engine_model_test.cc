// The engine on the real default model: greedy token sequences must not depend on how requests
// are batched, chunked, cached or preempted, and seeded sampling must not depend on the batch.
#include <gtest/gtest.h>

#include <map>

#include "engine/engine.h"
#include "engine/model_executor.h"
#include "model/model.h"
#include "tests/testing/paths.h"

namespace cleave {
namespace {

constexpr int32_t kMaxTokens = 20;

class EngineModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = testing::DefaultModelPath();
    if (path.empty()) return;
    auto model = Model::Load(path);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    model_ = std::move(model).value().release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << "default model not installed: run scripts/setup.sh";
  }

  static std::vector<TokenId> Chat(const std::string& user) {
    nlohmann::json messages = nlohmann::json::array({{{"role", "user"}, {"content", user}}});
    auto text = model_->chat_template().Render(messages, ChatRenderOptions{});
    EXPECT_TRUE(text.ok());
    return model_->tokenizer().Encode(*text, false, true);
  }

  static std::vector<std::vector<TokenId>> Prompts(int n) {
    const char* topics[] = {"the moon",    "bread", "rivers", "chess",   "volcanoes", "owls",
                            "trains",      "music", "glass",  "deserts", "bees",      "clocks",
                            "lighthouses", "maps",  "coffee", "snow"};
    std::vector<std::vector<TokenId>> prompts;
    for (int i = 0; i < n; ++i) {
      std::string q = fmt::format("Tell me {} facts about {}.", 1 + i % 4, topics[i % 16]);
      if (i % 3 == 0) q += " Please be brief, clear and accurate, and avoid lists.";
      prompts.push_back(Chat(q));
    }
    return prompts;
  }

  struct RunConfig {
    int32_t num_blocks = 512;
    int32_t max_batch_tokens = 2048;
    int32_t max_chunk_tokens = 0;
    bool prefix_caching = true;
    bool all_at_once = true;
    float temperature = 0.0f;
  };

  // Runs the prompts and returns each one's output tokens, checking that no block leaks.
  static std::vector<std::vector<TokenId>> Run(const std::vector<std::vector<TokenId>>& prompts,
                                               const RunConfig& rc, int64_t* preemptions = nullptr,
                                               int32_t* cached_tokens = nullptr) {
    EngineConfig config;
    config.num_blocks = rc.num_blocks;
    config.block_size = 16;
    config.enable_prefix_caching = rc.prefix_caching;
    config.scheduler.max_batch_tokens = rc.max_batch_tokens;
    config.scheduler.max_chunk_tokens = rc.max_chunk_tokens;
    ModelExecutor executor(*model_, config.num_blocks, config.block_size, 2);
    Engine engine(config, &executor, &model_->tokenizer());
    std::map<RequestId, size_t> index;
    std::vector<std::vector<TokenId>> outputs(prompts.size());
    auto add = [&](size_t i) {
      Request r;
      r.prompt = prompts[i];
      r.params.temperature = rc.temperature;
      r.params.seed = 1000 + i;
      r.params.max_tokens = kMaxTokens;
      auto id = engine.AddRequest(r);
      EXPECT_TRUE(id.ok()) << id.status().ToString();
      index[*id] = i;
    };
    auto drain = [&] {
      EXPECT_TRUE(engine.RunUntilIdle().ok());
      for (RequestOutput& out : engine.PollOutputs()) {
        auto& v = outputs[index[out.request_id]];
        v.insert(v.end(), out.token_ids.begin(), out.token_ids.end());
        if (out.finished && cached_tokens != nullptr) *cached_tokens += out.num_cached_tokens;
      }
    };
    for (size_t i = 0; i < prompts.size(); ++i) {
      add(i);
      if (!rc.all_at_once) drain();
    }
    drain();
    EXPECT_EQ(engine.block_stats().num_free_blocks, config.num_blocks) << "KV blocks leaked";
    if (preemptions != nullptr) *preemptions = engine.num_preemptions();
    return outputs;
  }

  static Model* model_;
};
Model* EngineModelTest::model_ = nullptr;

TEST_F(EngineModelTest, GreedyTokensIndependentOfBatchingChunkingCachingPreemption) {
  const auto prompts = Prompts(16);
  RunConfig alone;
  alone.all_at_once = false;
  alone.prefix_caching = false;
  const auto expected = Run(prompts, alone);
  for (const auto& e : expected) ASSERT_FALSE(e.empty());

  RunConfig batched;
  EXPECT_EQ(Run(prompts, batched), expected) << "16 at once";
  for (int32_t chunk : {16, 64, 512}) {
    RunConfig chunked;
    chunked.max_chunk_tokens = chunk;
    EXPECT_EQ(Run(prompts, chunked), expected) << "chunk " << chunk;
  }
  // Prefix cache hits: every prompt shares the chat template's system prompt, and running the
  // same prompts twice in one engine hits their whole prefixes.
  auto twice = prompts;
  twice.insert(twice.end(), prompts.begin(), prompts.end());
  RunConfig cached;
  cached.all_at_once = false;
  int32_t cached_tokens = 0;
  auto out = Run(twice, cached, nullptr, &cached_tokens);
  EXPECT_GT(cached_tokens, 0);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(out[i], expected[i]) << "cache miss run " << i;
    EXPECT_EQ(out[i + prompts.size()], expected[i]) << "cache hit run " << i;
  }
  // Preemption: too few blocks for all sequences at once.
  RunConfig tight;
  tight.num_blocks = 40;
  int64_t preemptions = 0;
  EXPECT_EQ(Run(prompts, tight, &preemptions), expected) << "with preemption";
  EXPECT_GT(preemptions, 0);
}

TEST_F(EngineModelTest, SeededSamplingIndependentOfBatch) {
  const auto prompts = Prompts(6);
  RunConfig alone;
  alone.all_at_once = false;
  alone.temperature = 0.9f;
  RunConfig batched = alone;
  batched.all_at_once = true;
  EXPECT_EQ(Run(prompts, alone), Run(prompts, batched));
}

}  // namespace
}  // namespace cleave
