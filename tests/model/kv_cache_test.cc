// The KV cache's element types: names, sizes, write/read rounding bounds, and logits of the same
// prompt with F32, F16 and Q8_0 caches within stated bounds of each other (synthetic model, and
// the default model when installed).
#include "model/kv_cache.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "core/thread_pool.h"
#include "model/model.h"
#include "model/synthetic_model.h"
#include "tests/testing/paths.h"

namespace cleave {
namespace {

TEST(KvCacheTest, ParsesDTypeNames) {
  EXPECT_EQ(*ParseKvCacheDType("f16"), DType::kF16);
  EXPECT_EQ(*ParseKvCacheDType("f32"), DType::kF32);
  EXPECT_EQ(*ParseKvCacheDType("q8_0"), DType::kQ8_0);
  EXPECT_FALSE(ParseKvCacheDType("q4_0").ok());
  EXPECT_FALSE(ParseKvCacheDType("F16").ok());
}

TEST(KvCacheTest, SizesFollowTheDType) {
  // 2 layers, 3 KV heads of 64: per token and layer K and V hold 192 elements each.
  EXPECT_EQ(KvCache::BytesPerToken(DType::kF32, 2, 3, 64), 2 * 2 * 192 * 4);
  EXPECT_EQ(KvCache::BytesPerToken(DType::kF16, 2, 3, 64), 2 * 2 * 192 * 2);
  EXPECT_EQ(KvCache::BytesPerToken(DType::kQ8_0, 2, 3, 64), 2 * 2 * (192 / 32) * 34);
  for (DType dtype : {DType::kF32, DType::kF16, DType::kQ8_0}) {
    KvCache cache(2, 5, 16, 3, 64, dtype);
    EXPECT_EQ(cache.dtype(), dtype);
    EXPECT_EQ(cache.bytes(), 5 * 16 * KvCache::BytesPerToken(dtype, 2, 3, 64));
  }
  EXPECT_EQ(KvCache::CheckSupported(DType::kQ8_0, 80).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(KvCache::CheckSupported(DType::kF16, 80).ok());
}

TEST(KvCacheTest, WriteReadRoundingBounds) {
  constexpr int64_t kHeads = 2, kHeadDim = 64, kStride = kHeads * kHeadDim;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> k(kStride), v(kStride), back(kStride);
  for (float& x : k) x = normal(rng);
  for (float& x : v) x = normal(rng);
  for (DType dtype : {DType::kF32, DType::kF16, DType::kQ8_0}) {
    KvCache cache(3, 4, 16, kHeads, kHeadDim, dtype);
    cache.Write(2, 3, 15, k.data(), v.data());
    for (int which = 0; which < 2; ++which) {
      const std::vector<float>& src = which == 0 ? k : v;
      if (which == 0)
        cache.ReadK(2, 3, 15, back.data());
      else
        cache.ReadV(2, 3, 15, back.data());
      for (int64_t b = 0; b < kStride / 32; ++b) {
        float block_max = 0;
        for (int i = 0; i < 32; ++i) block_max = std::max(block_max, std::abs(src[b * 32 + i]));
        for (int i = 0; i < 32; ++i) {
          const float x = src[b * 32 + i], y = back[b * 32 + i];
          // F16: round to nearest, half an ulp = 2^-11 relative. Q8_0: half a step of
          // max/127, plus the scale's own f16 rounding (2^-11 relative of up to 127 steps).
          const float bound = dtype == DType::kF32   ? 0.0f
                              : dtype == DType::kF16 ? std::abs(x) * 0x1p-11f
                                                     : block_max / 127 * (0.5f + 127 * 0x1p-11f);
          EXPECT_LE(std::abs(x - y), bound)
              << DTypeName(dtype) << " " << which << " " << b * 32 + i;
        }
      }
    }
    // Other slots are untouched (zero).
    cache.ReadK(2, 3, 14, back.data());
    EXPECT_EQ(std::count(back.begin(), back.end(), 0.0f), kStride);
  }
}

// Logits at every position of `tokens`, one span, with a cache of `dtype`.
std::vector<float> Logits(Model& model, const std::vector<TokenId>& tokens, DType dtype,
                          ThreadPool& pool) {
  constexpr int64_t kBlock = 16;
  const int64_t blocks = (static_cast<int64_t>(tokens.size()) + kBlock - 1) / kBlock;
  KvCache cache = model.MakeKvCache(blocks, kBlock, dtype);
  std::vector<int32_t> table(blocks);
  std::iota(table.rbegin(), table.rend(), 0);  // reversed: not the identity mapping
  ForwardItem item{tokens, 0, table, LogitsMode::kAll};
  std::vector<float> logits;
  Status s = model.Forward({&item, 1}, cache, pool, &logits);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return logits;
}

struct Diff {
  double max_abs = 0;
  int argmax_changes = 0;
};

Diff Compare(const std::vector<float>& a, const std::vector<float>& b, int64_t vocab) {
  Diff d;
  for (size_t r = 0; r < a.size() / vocab; ++r) {
    const float* x = &a[r * vocab];
    const float* y = &b[r * vocab];
    for (int64_t i = 0; i < vocab; ++i)
      d.max_abs = std::max(d.max_abs, double(std::abs(x[i] - y[i])));
    d.argmax_changes += std::max_element(x, x + vocab) - x != std::max_element(y, y + vocab) - y;
  }
  return d;
}

// Bounds, relative to the largest |logit| of the F32-cache run. F16 rounds each stored element
// to 2^-11 (4.9e-4) relative, Q8_0 to half a step of 1/127 of its block's largest value (3.9e-3
// of that value). K errors move softmax weights by exp(error in q·k), V errors move outputs
// directly, and both pass through every later layer, so logit errors of the order of the element
// error times the logit range are expected. Measured (2 threads, AVX-512): synthetic model (max
// |logit| 221) f16 1.0e-4, q8_0 1.9e-3 of the range; default model (35.5) f16 4.9e-4, q8_0
// 1.3e-2. The bounds are 2e-3 (F16) and 3e-2 (Q8_0) of the range: 4x and 2.3x the worst
// measured, and far below what a wrong slot, head or scale produces (errors of the order of the
// range itself).
constexpr double kF16RelativeBound = 2e-3;
constexpr double kQ8RelativeBound = 3e-2;

// Runs the prompt with each dtype and checks F16 and Q8_0 against F32.
void CheckDTypesAgree(Model& model, const std::vector<TokenId>& tokens, int max_q8_argmax_changes) {
  ThreadPool pool(2);
  const int64_t vocab = model.config().vocab_size;
  const std::vector<float> f32 = Logits(model, tokens, DType::kF32, pool);
  double range = 0;
  for (float x : f32) range = std::max(range, double(std::abs(x)));
  const Diff f16 = Compare(Logits(model, tokens, DType::kF16, pool), f32, vocab);
  const Diff q8 = Compare(Logits(model, tokens, DType::kQ8_0, pool), f32, vocab);
  std::printf(
      "%zu tokens, max |logit| %.3g: max |logit diff| vs f32 cache: f16 %.4g (%.2g of the "
      "range), q8_0 %.4g (%.2g); argmax changes f16 %d, q8_0 %d\n",
      tokens.size(), range, f16.max_abs, f16.max_abs / range, q8.max_abs, q8.max_abs / range,
      f16.argmax_changes, q8.argmax_changes);
  EXPECT_LE(f16.max_abs, kF16RelativeBound * range);
  EXPECT_LE(q8.max_abs, kQ8RelativeBound * range);
  EXPECT_EQ(f16.argmax_changes, 0);
  EXPECT_LE(q8.argmax_changes, max_q8_argmax_changes);
  EXPECT_GT(q8.max_abs, 0.0) << "q8_0 cache gave bit-identical logits: is the dtype ignored?";
  EXPECT_GT(f16.max_abs, 0.0) << "f16 cache gave bit-identical logits: is the dtype ignored?";
}

TEST(KvCacheModelTest, SyntheticModelDTypesAgree) {
  SyntheticModelSpec spec;  // 2 layers, head_dim 64, F32 weights
  const std::string path = testing::TempDir() + "/kv_dtypes.gguf";
  ASSERT_TRUE(WriteSyntheticModel(spec, path).ok());
  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  std::vector<TokenId> tokens;
  for (int i = 0; i < 70; ++i)
    tokens.push_back(static_cast<TokenId>((i * 37 + 11) % spec.vocab_size));
  CheckDTypesAgree(**model, tokens, 0);
}

TEST(KvCacheModelTest, DefaultModelDTypesAgree) {
  const std::string path = testing::DefaultModelPath();
  if (path.empty()) GTEST_SKIP() << "default model not installed: run scripts/setup.sh";
  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const std::vector<TokenId> tokens = (*model)->tokenizer().Encode(
      "The history of bread begins with flatbreads baked on hot stones. Later, people learned to "
      "keep a piece of fermented dough from one day to the next, and leavened bread spread "
      "through the ancient world. Bakers in Egypt, Greece and Rome built ovens, milled finer "
      "flour and sold loaves in the street; guilds of bakers set prices and standards.",
      true, false);
  ASSERT_GT(tokens.size(), 60u);
  CheckDTypesAgree(**model, tokens, 2);
}

}  // namespace
}  // namespace cleave
