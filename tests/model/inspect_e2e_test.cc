// End to end: runs the built `cleave inspect` on the default model, on a small file written by
// GgufWriter, and on corrupt and missing files, and checks output and exit codes.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/gguf_writer.h"
#include "tests/testing/paths.h"
#include "tests/testing/run_cleave.h"

namespace cleave {
namespace {

using testing::RunCleave;
using RunResult = testing::CommandResult;

bool Contains(const std::string& text, std::string_view sub) {
  return text.find(sub) != std::string::npos;
}

class InspectE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(testing::CleaveBinary())) {
      GTEST_SKIP() << "cleave binary not built at " << testing::CleaveBinary()
                   << " (build target `cleave`)";
    }
  }
};

TEST_F(InspectE2E, DefaultModelText) {
  const std::string model = testing::DefaultModelPath();
  if (model.empty()) GTEST_SKIP() << "default model not installed (run scripts/setup.sh)";
  RunResult r = RunCleave("inspect " + model);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "general.architecture")) << r.out;
  EXPECT_TRUE(Contains(r.out, "tensors (272)"));
  EXPECT_TRUE(Contains(r.out, "token_embd.weight"));
  EXPECT_TRUE(Contains(r.out, "[576, 49152]"));
  EXPECT_TRUE(Contains(r.out, "architecture: llama"));
  EXPECT_TRUE(Contains(r.out, "layers: 30"));
  EXPECT_TRUE(Contains(r.out, "embedding: 576"));
  EXPECT_TRUE(Contains(r.out, "q4_1 x"));
  // The 49152-token vocabulary is summarized, not printed.
  EXPECT_TRUE(Contains(r.out, "[string; 49152]"));
  EXPECT_TRUE(Contains(r.out, "49144 more"));
  EXPECT_LT(r.out.size(), 200000u);
  EXPECT_TRUE(r.err.empty()) << r.err;
}

TEST_F(InspectE2E, DefaultModelJson) {
  const std::string model = testing::DefaultModelPath();
  if (model.empty()) GTEST_SKIP() << "default model not installed (run scripts/setup.sh)";
  RunResult r = RunCleave("inspect --json " + model);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["summary"]["architecture"], "llama");
  EXPECT_EQ(j["summary"]["tensor_count"], 272);
  EXPECT_EQ(j["summary"]["layers"], 30);
  EXPECT_EQ(j["summary"]["file_size"], std::filesystem::file_size(model));
  ASSERT_EQ(j["tensors"].size(), 272u);
  uint64_t params = 0;
  bool found = false;
  for (const auto& t : j["tensors"]) {
    uint64_t n = 1;
    for (const auto& d : t["shape"]) n *= d.get<uint64_t>();
    params += n;
    if (t["name"] == "token_embd.weight") {
      found = true;
      EXPECT_EQ(t["type"], "q8_0");
      EXPECT_EQ(t["shape"], nlohmann::json::array({576, 49152}));
      EXPECT_EQ(t["bytes"], 576 / 32 * 34 * 49152);
    }
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(j["summary"]["parameters"], params);
  bool saw_tokens = false;
  for (const auto& kv : j["metadata"]) {
    if (kv["key"] == "tokenizer.ggml.tokens") {
      saw_tokens = true;
      EXPECT_EQ(kv["count"], 49152);
      EXPECT_EQ(kv["truncated"], true);
      EXPECT_LE(kv["value"].size(), 8u);
    }
  }
  EXPECT_TRUE(saw_tokens);
}

TEST_F(InspectE2E, SyntheticFileFullAndJson) {
  gguf::GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetString("general.name", "tiny");
  w.SetUint32("llama.context_length", 128);
  w.SetUint32("llama.block_count", 1);
  const std::string long_text(300, 'z');
  w.SetString("long", long_text);
  std::vector<float> weights(64, 0.5f);
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(weights.data()), 256);
  ASSERT_TRUE(w.AddTensor("w", DType::kF32, {16, 4}, bytes).ok());
  const std::string path = testing::TempDir() + "/tiny.gguf";
  ASSERT_TRUE(w.WriteFile(path).ok());

  RunResult text = RunCleave("inspect " + path);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_TRUE(Contains(text.out, "(300 bytes)"));  // long string shortened
  EXPECT_FALSE(Contains(text.out, long_text));
  EXPECT_TRUE(Contains(text.out, "context length: 128"));
  EXPECT_TRUE(Contains(text.out, "parameters: 64 (64)"));
  RunResult full = RunCleave("inspect --full -m " + path);
  ASSERT_EQ(full.exit_code, 0) << full.err;
  EXPECT_TRUE(Contains(full.out, long_text));

  RunResult json = RunCleave("inspect --json " + path);
  ASSERT_EQ(json.exit_code, 0) << json.err;
  auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["summary"]["parameters"], 64);
  EXPECT_EQ(j["summary"]["context_length"], 128);
  EXPECT_EQ(j["summary"]["tensor_types"]["f32"]["bytes"], 256);
  EXPECT_EQ(j["tensors"][0]["shape"], nlohmann::json::array({16, 4}));
}

TEST_F(InspectE2E, CorruptFileFails) {
  gguf::GgufWriter w;
  w.SetString("general.architecture", "llama");
  std::vector<uint8_t> data(64, 1);
  ASSERT_TRUE(w.AddTensor("w", DType::kF32, {16}, data).ok());
  auto bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok());
  bytes->resize(bytes->size() / 2);
  const std::string path = testing::TempDir() + "/corrupt.gguf";
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes->data()),
              static_cast<std::streamsize>(bytes->size()));
  }
  RunResult r = RunCleave("inspect " + path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_TRUE(Contains(r.err, "DATA_LOSS")) << r.err;
  EXPECT_TRUE(Contains(r.err, "offset")) << r.err;
  EXPECT_TRUE(Contains(r.err, path)) << r.err;

  RunResult missing = RunCleave("inspect " + testing::TempDir() + "/nope.gguf");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(Contains(missing.err, "nope.gguf")) << missing.err;
}

}  // namespace
}  // namespace cleave
