// The forward pass against the independent numpy reference (tests/reference/llama_reference.py),
// on synthetic models in every weight format and architecture variant, and on the default model.
//
// Tolerances. The reference computes in float64 from the dequantized weights. cleave computes in
// float32 and, for quantized weights, quantizes the activations to int16 blocks of 32
// (d = amax / 32767) before the integer dot products; each dot product then carries an error of
// at most sum over blocks of (amax / 65534) * sum |w|, and two layers of residual updates add
// those up. Measured worst cases on these models: F32/F16/BF16 about 1e-4, quantized formats
// 0.004-0.007; the bounds below leave a 3x margin for other CPUs' accumulation orders. Argmax
// must agree at every position unless the reference's top two logits are closer than the
// tolerance (a tie the two computations may legitimately break differently).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/thread_pool.h"
#include "model/model.h"
#include "model/synthetic_model.h"
#include "tests/testing/llama_reference.h"
#include "tests/testing/paths.h"

namespace cleave {
namespace {

using testing::RunLlamaReference;

constexpr int64_t kBlockSize = 16;

// Extra tolerance for the default F16 KV cache. Each stored key and value is rounded to 2^-11
// relative; these synthetic models' logits reach |221|, and the rounding moves them by about
// 1e-4 of that (measured: 0.016 to 0.019 more than with an F32 cache for the float formats; see
// kv_cache_test.cc for the F16-vs-F32 cache bound, 2e-3 of the logit range).
constexpr double kF16KvTolerance = 0.03;

// Runs `tokens` through the model in one span with logits at every position.
std::vector<float> RunAll(Model& model, const std::vector<TokenId>& tokens, ThreadPool& pool,
                          DType kv_dtype = DType::kF16) {
  const int64_t num_blocks = (static_cast<int64_t>(tokens.size()) + kBlockSize - 1) / kBlockSize;
  KvCache cache = model.MakeKvCache(num_blocks, kBlockSize, kv_dtype);
  std::vector<int32_t> table(num_blocks);
  std::iota(table.begin(), table.end(), 0);
  ForwardItem item{tokens, 0, table, LogitsMode::kAll};
  std::vector<float> logits;
  Status s = model.Forward({&item, 1}, cache, pool, &logits);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return logits;
}

int64_t Argmax(const float* row, int64_t n) {
  return std::max_element(row, row + n) - row;
}

struct Comparison {
  double max_abs_diff = 0;
  int argmax_mismatches = 0;  // not explained by a near-tie in the reference
};

Comparison Compare(const std::vector<float>& ours, const std::vector<float>& ref, int64_t vocab,
                   double tie_tolerance) {
  Comparison c;
  const int64_t rows = static_cast<int64_t>(ref.size()) / vocab;
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = &ours[r * vocab];
    const float* b = &ref[r * vocab];
    for (int64_t i = 0; i < vocab; ++i)
      c.max_abs_diff = std::max(c.max_abs_diff, double(std::abs(a[i] - b[i])));
    const int64_t am = Argmax(a, vocab), bm = Argmax(b, vocab);
    if (am != bm && b[bm] - b[am] > tie_tolerance) ++c.argmax_mismatches;
  }
  return c;
}

struct FormatCase {
  const char* name;
  std::string arch;
  DType weight_type;
  DType embedding_type;
  bool tied;
  double tolerance;  // max |logit difference|; see the file comment
};

void PrintTo(const FormatCase& fc, std::ostream* os) {
  *os << fc.name;
}

class SyntheticForwardTest : public ::testing::TestWithParam<FormatCase> {};

TEST_P(SyntheticForwardTest, MatchesReference) {
  if (testing::ReferencePython().empty())
    GTEST_SKIP() << "reference env missing: run scripts/setup.sh";
  const FormatCase& fc = GetParam();
  SyntheticModelSpec spec;
  spec.arch = fc.arch;
  spec.weight_type = fc.weight_type;
  spec.embedding_type = fc.embedding_type;
  spec.tied_embeddings = fc.tied;
  const std::string path = fmt::format("{}/synthetic-{}.gguf", testing::TempDir(), fc.name);
  ASSERT_TRUE(WriteSyntheticModel(spec, path).ok());
  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  std::vector<TokenId> tokens;
  uint64_t x = 12345;
  for (int i = 0; i < 37; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    tokens.push_back(static_cast<TokenId>((x >> 33) % spec.vocab_size));
  }
  auto ref = RunLlamaReference(path, tokens, 0);
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();
  ThreadPool pool(2);
  // With an F32 KV cache the forward pass's own arithmetic is checked at fc.tolerance; the default
  // F16 cache adds its rounding (see kF16KvTolerance).
  for (DType kv_dtype : {DType::kF32, DType::kF16}) {
    const double tolerance =
        kv_dtype == DType::kF32 ? fc.tolerance : fc.tolerance + kF16KvTolerance;
    std::vector<float> ours = RunAll(**model, tokens, pool, kv_dtype);
    Comparison c = Compare(ours, ref->logits, ref->vocab, tolerance);
    std::printf("[%s, %s KV cache] max |logit diff| = %.3g (tolerance %.3g)\n", fc.name,
                std::string(DTypeName(kv_dtype)).c_str(), c.max_abs_diff, tolerance);
    EXPECT_LE(c.max_abs_diff, tolerance) << DTypeName(kv_dtype);
    EXPECT_EQ(c.argmax_mismatches, 0) << DTypeName(kv_dtype);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Formats, SyntheticForwardTest,
    ::testing::Values(FormatCase{"f32", "llama", DType::kF32, DType::kF32, true, 1e-3},
                      FormatCase{"f16", "llama", DType::kF16, DType::kF16, true, 1e-3},
                      FormatCase{"bf16", "llama", DType::kBF16, DType::kBF16, true, 1e-3},
                      FormatCase{"q8_0", "llama", DType::kQ8_0, DType::kQ8_0, true, 0.02},
                      FormatCase{"q4_0", "llama", DType::kQ4_0, DType::kQ8_0, true, 0.02},
                      FormatCase{"q4_1", "llama", DType::kQ4_1, DType::kQ8_0, true, 0.02},
                      FormatCase{"q4_k", "llama", DType::kQ4_K, DType::kQ6_K, true, 0.02},
                      FormatCase{"q5_k", "llama", DType::kQ5_K, DType::kQ8_0, true, 0.02},
                      FormatCase{"q6_k", "llama", DType::kQ6_K, DType::kQ6_K, true, 0.02},
                      FormatCase{"qwen2_bias_neox", "qwen2", DType::kQ8_0, DType::kF16, true, 0.02},
                      FormatCase{"untied_output", "llama", DType::kF16, DType::kF16, false, 1e-3}),
    [](const auto& info) { return std::string(info.param.name); });

// Batch invariance: a sequence's logits do not depend on what else is in the batch, and chunked
// prefill gives the logits of one-shot prefill.
TEST(ForwardBatchTest, BatchedAndChunkedMatchAlone) {
  SyntheticModelSpec spec;
  spec.weight_type = DType::kQ4_1;
  spec.embedding_type = DType::kQ8_0;
  const std::string path = testing::TempDir() + "/batch.gguf";
  ASSERT_TRUE(WriteSyntheticModel(spec, path).ok());
  auto loaded = Model::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  Model& model = **loaded;
  ThreadPool pool(2);
  const int64_t vocab = model.config().vocab_size;
  std::vector<std::vector<TokenId>> seqs = {
      {5, 9, 300, 12}, {7}, {100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110,
                             111, 112, 113, 114, 115, 116, 117, 118, 119, 120}};
  std::vector<std::vector<float>> alone;
  for (const auto& s : seqs) alone.push_back(RunAll(model, s, pool));

  // All three in one batch, each in its own blocks of one shared cache.
  KvCache cache = model.MakeKvCache(16, kBlockSize);
  std::vector<std::vector<int32_t>> tables = {{3, 4}, {9}, {0, 7, 2}};
  std::vector<ForwardItem> batch;
  for (size_t i = 0; i < seqs.size(); ++i)
    batch.push_back({seqs[i], 0, tables[i], LogitsMode::kAll});
  std::vector<float> logits;
  ASSERT_TRUE(model.Forward(batch, cache, pool, &logits).ok());
  int64_t row = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (size_t j = 0; j < seqs[i].size(); ++j, ++row) {
      for (int64_t v = 0; v < vocab; ++v) {
        ASSERT_NEAR(logits[row * vocab + v], alone[i][j * vocab + v], 1e-4) << i << " " << j;
      }
    }
  }

  // The long sequence again, prefilled in chunks of 5 with decode-style continuation.
  KvCache chunked_cache = model.MakeKvCache(16, kBlockSize);
  const auto& s = seqs[2];
  for (size_t start = 0; start < s.size(); start += 5) {
    size_t n = std::min<size_t>(5, s.size() - start);
    ForwardItem item{std::span<const TokenId>(s).subspan(start, n), static_cast<int64_t>(start),
                     tables[2], LogitsMode::kAll};
    ASSERT_TRUE(model.Forward({&item, 1}, chunked_cache, pool, &logits).ok());
    for (size_t j = 0; j < n; ++j) {
      for (int64_t v = 0; v < vocab; ++v) {
        ASSERT_NEAR(logits[j * vocab + v], alone[2][(start + j) * vocab + v], 1e-4);
      }
    }
  }
}

TEST(ForwardBatchTest, RejectsBadBatches) {
  SyntheticModelSpec spec;
  const std::string path = testing::TempDir() + "/bad.gguf";
  ASSERT_TRUE(WriteSyntheticModel(spec, path).ok());
  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok());
  ThreadPool pool(1);
  KvCache cache = (*model)->MakeKvCache(2, kBlockSize);
  std::vector<float> logits;
  std::vector<TokenId> tokens(20, 1);
  std::vector<int32_t> one_block = {0};
  ForwardItem too_few_blocks{tokens, 0, one_block, LogitsMode::kLast};
  EXPECT_EQ((*model)->Forward({&too_few_blocks, 1}, cache, pool, &logits).code(),
            StatusCode::kInvalidArgument);
  std::vector<int32_t> bad_block = {0, 5};
  ForwardItem out_of_range{tokens, 0, bad_block, LogitsMode::kLast};
  EXPECT_EQ((*model)->Forward({&out_of_range, 1}, cache, pool, &logits).code(),
            StatusCode::kInvalidArgument);
  std::vector<TokenId> bad_token = {100000};
  ForwardItem bad_id{bad_token, 0, one_block, LogitsMode::kLast};
  EXPECT_EQ((*model)->Forward({&bad_id, 1}, cache, pool, &logits).code(),
            StatusCode::kInvalidArgument);
}

TEST(ForwardLoadTest, UnsupportedFormatNamesTensorAndFormat) {
  SyntheticModelSpec spec;
  spec.weight_type = DType::kQ5_0;  // a real GGUF format cleave does not run
  const std::string path = testing::TempDir() + "/q5_0.gguf";
  Status written = WriteSyntheticModel(spec, path);
  if (!written.ok()) GTEST_SKIP() << "cannot write q5_0 here: " << written.ToString();
  auto model = Model::Load(path);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(model.status().message().find("blk.0.attn_q.weight"), std::string::npos)
      << model.status().message();
  EXPECT_NE(model.status().message().find("q5_0"), std::string::npos);
}

}  // namespace
}  // namespace cleave
