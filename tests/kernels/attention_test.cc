// Paged attention against a float64 reference computed here from the stored (rounded) keys and
// values, for every KV dtype on every ISA this CPU supports: partial last blocks, shuffled block
// tables, a KV head other than 0, and head_dims with SIMD tails (F32/F16).
#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/quant_formats.h"

namespace cleave::kernels {
namespace {

struct Case {
  DType dtype;
  int64_t head_dim;
  int64_t num_positions;
};

// Random K/V laid out in blocks of 16 slots of 3 KV heads, under a shuffled block table.
struct PagedData {
  static constexpr int64_t kBlockSize = 16, kKvHeads = 3;
  int64_t head_dim, slot_bytes, token_stride;
  std::vector<uint8_t> k, v;
  std::vector<int32_t> table;
  std::vector<float> k_stored, v_stored;  // [position][token_stride], as dequantized

  PagedData(DType dtype, int64_t hd, int64_t positions, std::mt19937& rng) : head_dim(hd) {
    token_stride = kKvHeads * hd;
    slot_bytes = kKvHeads * KvHeadBytes(dtype, hd);
    const int64_t num_blocks = (positions + kBlockSize - 1) / kBlockSize + 2;  // 2 unused
    k.assign(num_blocks * kBlockSize * slot_bytes, 0xff);
    v.assign(k.size(), 0xff);
    table.resize(num_blocks);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> row(token_stride);
    k_stored.resize(positions * token_stride);
    v_stored.resize(positions * token_stride);
    for (int64_t p = 0; p < positions; ++p) {
      const int64_t offset = (table[p / kBlockSize] * kBlockSize + p % kBlockSize) * slot_bytes;
      for (float& x : row) x = 2.0f * normal(rng);
      QuantizeRow(dtype, row.data(), &k[offset], token_stride);
      DequantizeRow(dtype, &k[offset], &k_stored[p * token_stride], token_stride);
      for (float& x : row) x = normal(rng);
      QuantizeRow(dtype, row.data(), &v[offset], token_stride);
      DequantizeRow(dtype, &v[offset], &v_stored[p * token_stride], token_stride);
    }
  }
};

std::vector<double> Reference(const PagedData& d, const std::vector<float>& q, int64_t kv_head,
                              int64_t positions, double scale) {
  const int64_t hd = d.head_dim;
  std::vector<double> s(positions);
  for (int64_t p = 0; p < positions; ++p) {
    double dot = 0;
    for (int64_t i = 0; i < hd; ++i)
      dot += double(q[i]) * d.k_stored[p * d.token_stride + kv_head * hd + i];
    s[p] = dot * scale;
  }
  const double mx = *std::max_element(s.begin(), s.end());
  double sum = 0;
  for (double& x : s) sum += (x = std::exp(x - mx));
  std::vector<double> out(hd, 0.0);
  for (int64_t p = 0; p < positions; ++p) {
    for (int64_t i = 0; i < hd; ++i)
      out[i] += s[p] / sum * d.v_stored[p * d.token_stride + kv_head * hd + i];
  }
  return out;
}

class AttentionTest : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionTest, EveryIsaMatchesFloat64Reference) {
  const Case& c = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(c.head_dim * 1000 + c.num_positions));
  PagedData d(c.dtype, c.head_dim, c.num_positions, rng);
  const PagedKv k{c.dtype, d.k.data(), PagedData::kBlockSize, d.slot_bytes};
  const PagedKv v{c.dtype, d.v.data(), PagedData::kBlockSize, d.slot_bytes};
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(c.head_dim), scores(c.num_positions), out(c.head_dim);
  for (float& x : q) x = normal(rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  for (cpu::Isa isa : cpu::SupportedIsas()) {
    for (int64_t kv_head : {int64_t{0}, PagedData::kKvHeads - 1}) {
      // Every prefix length up to num_positions exercises partial blocks.
      for (int64_t n : {int64_t{1}, c.num_positions / 2 + 1, c.num_positions}) {
        AttentionHead a{q.data(), d.table.data(), n,         kv_head, c.head_dim,
                        scale,    scores.data(),  out.data()};
        PagedAttentionWith(isa, k, v, a);
        const std::vector<double> ref = Reference(d, q, kv_head, n, scale);
        // float32 accumulation over head_dim products and n weights: relative error ~1e-6;
        // outputs are O(1) (weighted means of N(0,1) values).
        for (int64_t i = 0; i < c.head_dim; ++i) {
          ASSERT_NEAR(out[i], ref[i], 2e-5)
              << cpu::IsaName(isa) << " " << DTypeName(c.dtype) << " hd=" << c.head_dim
              << " n=" << n << " kv_head=" << kv_head << " i=" << i;
        }
      }
    }
  }
}

// A GQA group of query heads in one call: each head's output is bit-identical to a call with
// that head alone, and within the same tolerance of the float64 reference.
TEST_P(AttentionTest, GroupOfHeadsEqualsSingleHeads) {
  const Case& c = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(c.head_dim * 77 + c.num_positions));
  PagedData d(c.dtype, c.head_dim, c.num_positions, rng);
  const PagedKv k{c.dtype, d.k.data(), PagedData::kBlockSize, d.slot_bytes};
  const PagedKv v{c.dtype, d.v.data(), PagedData::kBlockSize, d.slot_bytes};
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  for (int64_t heads : {2, 3, 8}) {
    std::vector<float> q(heads * c.head_dim);
    for (float& x : q) x = normal(rng);
    for (cpu::Isa isa : cpu::SupportedIsas()) {
      const int64_t kv_head = 1, n = c.num_positions;
      std::vector<float> scores(heads * n), out(heads * c.head_dim, NAN);
      AttentionHead group{q.data(), d.table.data(), n,          kv_head, c.head_dim,
                          scale,    scores.data(),  out.data(), heads};
      PagedAttentionWith(isa, k, v, group);
      for (int64_t h = 0; h < heads; ++h) {
        std::vector<float> one(c.head_dim, NAN), one_scores(n);
        const float* qh = q.data() + h * c.head_dim;
        AttentionHead a{qh,    d.table.data(),    n,         kv_head, c.head_dim,
                        scale, one_scores.data(), one.data()};
        PagedAttentionWith(isa, k, v, a);
        const std::vector<double> ref =
            Reference(d, std::vector<float>(qh, qh + c.head_dim), kv_head, n, scale);
        for (int64_t i = 0; i < c.head_dim; ++i) {
          ASSERT_EQ(out[h * c.head_dim + i], one[i])
              << cpu::IsaName(isa) << " heads=" << heads << " h=" << h << " i=" << i;
          ASSERT_NEAR(out[h * c.head_dim + i], ref[i], 2e-5)
              << cpu::IsaName(isa) << " heads=" << heads << " h=" << h << " i=" << i;
        }
      }
    }
  }
}

// Scores spread over hundreds (a query 40x larger than usual): the softmax's exp then sees
// inputs far below -88 (where a vectorized exp must not produce NaN or garbage) and a few
// dominant positions; every ISA still matches the float64 reference.
TEST(AttentionWideScores, EveryIsaMatchesFloat64Reference) {
  std::mt19937 rng(5);
  const int64_t hd = 64, n = 70;
  PagedData d(DType::kF32, hd, n, rng);
  const PagedKv k{DType::kF32, d.k.data(), PagedData::kBlockSize, d.slot_bytes};
  const PagedKv v{DType::kF32, d.v.data(), PagedData::kBlockSize, d.slot_bytes};
  std::normal_distribution<float> normal(0.0f, 40.0f);
  std::vector<float> q(hd), scores(n), out(hd);
  for (float& x : q) x = normal(rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const std::vector<double> ref = Reference(d, q, 2, n, scale);
  for (cpu::Isa isa : cpu::SupportedIsas()) {
    AttentionHead a{q.data(), d.table.data(), n, 2, hd, scale, scores.data(), out.data()};
    PagedAttentionWith(isa, k, v, a);
    for (int64_t i = 0; i < hd; ++i) {
      ASSERT_NEAR(out[i], ref[i], 2e-5) << cpu::IsaName(isa) << " i=" << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, AttentionTest,
                         ::testing::Values(Case{DType::kF32, 64, 37}, Case{DType::kF32, 40, 16},
                                           Case{DType::kF32, 5, 3}, Case{DType::kF16, 64, 100},
                                           Case{DType::kF16, 72, 17}, Case{DType::kF16, 128, 1},
                                           Case{DType::kQ8_0, 64, 50}, Case{DType::kQ8_0, 128, 33},
                                           Case{DType::kQ8_0, 32, 16}),
                         [](const auto& info) {
                           return std::string(DTypeName(info.param.dtype)) + "_hd" +
                                  std::to_string(info.param.head_dim) + "_n" +
                                  std::to_string(info.param.num_positions);
                         });

TEST(AttentionDType, SupportAndSizes) {
  EXPECT_TRUE(CheckKvDType(DType::kF32, 40).ok());
  EXPECT_TRUE(CheckKvDType(DType::kF16, 40).ok());
  EXPECT_TRUE(CheckKvDType(DType::kQ8_0, 64).ok());
  EXPECT_EQ(CheckKvDType(DType::kQ8_0, 48).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckKvDType(DType::kQ4_0, 64).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(KvHeadBytes(DType::kF32, 64), 256);
  EXPECT_EQ(KvHeadBytes(DType::kF16, 64), 128);
  EXPECT_EQ(KvHeadBytes(DType::kQ8_0, 64), 68);  // two blocks of 2 + 32 bytes
}

}  // namespace
}  // namespace cleave::kernels
