// MatMul on every ISA level this CPU has x every weight format x a table of shapes, against the
// scalar double-precision MatMulReference.
#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/fp16.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/quant_formats.h"

namespace cleave::kernels {
namespace {

struct Shape {
  int64_t rows, cols, num_tokens;
};

const DType kFormats[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0, DType::kQ4_0,
                          DType::kQ4_1, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

// cols 96 and 576 leave partial groups in the AVX-512 kernels (which take 2 or 4 blocks at a
// time); few tokens take the decode path (1-2; 1-10 for the AVX-512 legacy formats), more the
// batched path with token tiles and a tail.
std::vector<Shape> Shapes() {
  std::vector<Shape> shapes;
  for (int64_t cols : {96, 256, 512, 576, 1536}) {
    for (int64_t rows : {1, 7, 16, 33}) {
      for (int64_t tokens : {1, 2, 3, 6, 17}) shapes.push_back({rows, cols, tokens});
    }
  }
  return shapes;
}

// Weights quantized from Gaussian values (rows get different magnitudes, so blocks of very
// different scales meet in one product), plus activations with an outlier channel, as real
// hidden states have.
struct Problem {
  std::vector<uint8_t> weights;
  std::vector<float> x;
  WeightView view;
  std::vector<float> ref;  // MatMulReference
  std::vector<float> tol;  // Tolerance() per output
};

Problem MakeProblem(DType dtype, const Shape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Problem p;
  const int64_t row_bytes = static_cast<int64_t>(*RowBytes(dtype, s.cols));
  p.weights.resize(row_bytes * s.rows);
  std::vector<float> row(s.cols);
  for (int64_t r = 0; r < s.rows; ++r) {
    const float scale = 0.01f * (1 + r % 5);
    for (float& v : row) v = normal(rng) * scale;
    QuantizeRow(dtype, row.data(), p.weights.data() + r * row_bytes, s.cols);
  }
  p.x.resize(s.num_tokens * s.cols);
  for (float& v : p.x) v = normal(rng);
  for (int64_t t = 0; t < s.num_tokens; ++t) p.x[t * s.cols + 5] = 40.0f;  // outlier channel
  p.view = WeightView{dtype, p.weights.data(), s.rows, s.cols};
  return p;
}

// Error bound for y[t, r].
//
// Quantized formats: the weights are used exactly (the integer codes and their scales), but
// each block of 32 activations is rounded to d * q with int16 q and d = max|x_block| / 32767,
// an error of at most d / 2 per element (x 1.01 for the float rounding of x / d itself). So
// |y - y_ref| <= sum_blocks (amax_b / 65534) * sum_{i in b} |w_i|, plus float rounding of the
// per-block partial sums.
// Float formats: only rounding, bounded by cols * eps * sum |w| |x| (worst-case summation).
double Tolerance(const std::vector<float>& w_row, const float* x, int64_t cols, bool quantized) {
  double abs_sum = 0, act_bound = 0;
  for (int64_t b = 0; b < cols / 32; ++b) {
    double amax = 0, wabs = 0;
    for (int i = 0; i < 32; ++i) {
      amax = std::max(amax, std::fabs(static_cast<double>(x[32 * b + i])));
      wabs += std::fabs(w_row[32 * b + i]);
      abs_sum += std::fabs(static_cast<double>(w_row[32 * b + i]) * x[32 * b + i]);
    }
    act_bound += amax / 65534 * wabs;
  }
  const double rounding = static_cast<double>(cols) * 6e-8 * abs_sum;
  return (quantized ? act_bound * 1.01 : 0) + rounding + 1e-30;
}

// Every (format, shape) problem with its reference result, built once for all ISAs.
const std::vector<Problem>& Problems() {
  static const std::vector<Problem> problems = [] {
    std::vector<Problem> out;
    uint32_t seed = 1;
    for (DType dtype : kFormats) {
      for (const Shape& s : Shapes()) {
        if (!RowBytes(dtype, s.cols).has_value()) continue;  // K-quants need cols % 256 == 0
        Problem p = MakeProblem(dtype, s, seed++);
        p.ref.resize(s.num_tokens * s.rows);
        MatMulReference(p.view, p.x.data(), s.num_tokens, p.ref.data());
        const bool quantized =
            dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16;
        const int64_t row_bytes = static_cast<int64_t>(*RowBytes(dtype, s.cols));
        std::vector<float> w_row(s.cols);
        p.tol.resize(s.num_tokens * s.rows);
        for (int64_t r = 0; r < s.rows; ++r) {
          DequantizeRow(dtype, p.weights.data() + r * row_bytes, w_row.data(), s.cols);
          for (int64_t t = 0; t < s.num_tokens; ++t) {
            p.tol[t * s.rows + r] =
                static_cast<float>(Tolerance(w_row, p.x.data() + t * s.cols, s.cols, quantized));
          }
        }
        out.push_back(std::move(p));
      }
    }
    return out;
  }();
  return problems;
}

class MatMulTest : public ::testing::TestWithParam<cpu::Isa> {};

TEST_P(MatMulTest, AllFormatsAndShapesMatchReference) {
  const cpu::Isa isa = GetParam();
  // Most problems run on one thread; every fourth on two, which covers the row split and the
  // per-thread scratch without paying a pool wake-up per problem on a loaded CI machine.
  ThreadPool single(1), pair(2);
  int index = 0;
  for (const Problem& p : Problems()) {
    ThreadPool& pool = index++ % 4 == 3 ? pair : single;
    const int64_t rows = p.view.rows, cols = p.view.cols;
    const int64_t num_tokens = static_cast<int64_t>(p.x.size()) / cols;
    SCOPED_TRACE(std::string(DTypeName(p.view.dtype)) + " rows=" + std::to_string(rows) +
                 " cols=" + std::to_string(cols) + " tokens=" + std::to_string(num_tokens));
    std::vector<float> y(num_tokens * rows, NAN);
    MatMul(p.view, p.x.data(), num_tokens, y.data(), pool, isa);
    int failures = 0;
    for (int64_t i = 0; i < num_tokens * rows; ++i) {
      if (!(std::fabs(static_cast<double>(y[i]) - p.ref[i]) <= p.tol[i]) && ++failures <= 3) {
        ADD_FAILURE() << "r=" << i % rows << " t=" << i / rows << " got " << y[i] << " want "
                      << p.ref[i] << " tol " << p.tol[i];
      }
    }
    if (failures > 0) return;
  }
}

// One outlier of 1000 per block of 32 among positive values ~1, with positive weights, so every
// output is dominated neither by the outlier alone nor near zero. int8 activations (d = 1000 /
// 127) round the small values to 0 and are off by several percent; int16 ones stay within
// about 1e-5. Checked on every ISA and quantized format, decode and prefill shapes.
TEST_P(MatMulTest, OutlierPerBlockStaysAccurate) {
  const cpu::Isa isa = GetParam();
  ThreadPool pool(1);
  const DType quantized[] = {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1,
                             DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};
  for (DType dtype : quantized) {
    for (int64_t num_tokens : {1, 5}) {
      SCOPED_TRACE(std::string(DTypeName(dtype)) + " tokens=" + std::to_string(num_tokens));
      const int64_t rows = 8, cols = 512;
      std::mt19937 rng(7);
      std::uniform_real_distribution<float> w_dist(0.02f, 0.08f), x_dist(0.5f, 1.5f);
      const int64_t row_bytes = static_cast<int64_t>(*RowBytes(dtype, cols));
      std::vector<uint8_t> weights(row_bytes * rows);
      std::vector<float> row(cols);
      for (int64_t r = 0; r < rows; ++r) {
        for (float& v : row) v = w_dist(rng);
        QuantizeRow(dtype, row.data(), weights.data() + r * row_bytes, cols);
      }
      std::vector<float> x(num_tokens * cols);
      for (int64_t i = 0; i < num_tokens * cols; ++i) {
        x[i] = i % 32 == 11 ? 1000.0f : x_dist(rng);
      }
      const WeightView view{dtype, weights.data(), rows, cols};
      std::vector<float> ref(num_tokens * rows), y(num_tokens * rows, NAN);
      MatMulReference(view, x.data(), num_tokens, ref.data());
      MatMul(view, x.data(), num_tokens, y.data(), pool, isa);
      for (int64_t i = 0; i < num_tokens * rows; ++i) {
        ASSERT_GT(ref[i], 0.0f);
        EXPECT_LE(std::fabs(y[i] - ref[i]), 1e-3 * ref[i]) << "output " << i;
      }
    }
  }
}

// Batch invariance: a token's outputs are bit-identical whether it is multiplied alone (the
// decode path) or inside a batch that takes the decode path or the batched one (token tiles and
// tails; 11 tokens is batched on every level), on one thread or two. Continuous batching relies on
// this: a sequence's logits must not depend on what else shares its step.
TEST_P(MatMulTest, BatchedOutputsEqualSingleToken) {
  const cpu::Isa isa = GetParam();
  ThreadPool single(1), pair(2);
  for (DType dtype : kFormats) {
    for (int64_t cols : {96, 576, 1536}) {
      if (!RowBytes(dtype, cols).has_value()) continue;
      SCOPED_TRACE(std::string(DTypeName(dtype)) + " cols=" + std::to_string(cols));
      const int64_t rows = 37, num_tokens = 11;
      std::mt19937 rng(11);
      std::normal_distribution<float> normal(0.0f, 1.0f);
      const int64_t row_bytes = static_cast<int64_t>(*RowBytes(dtype, cols));
      std::vector<uint8_t> weights(row_bytes * rows);
      std::vector<float> row(cols);
      for (int64_t r = 0; r < rows; ++r) {
        for (float& v : row) v = normal(rng);
        QuantizeRow(dtype, row.data(), weights.data() + r * row_bytes, cols);
      }
      std::vector<float> x(num_tokens * cols);
      for (float& v : x) v = normal(rng);
      const WeightView view{dtype, weights.data(), rows, cols};
      std::vector<float> alone(num_tokens * rows);
      for (int64_t t = 0; t < num_tokens; ++t) {
        MatMul(view, x.data() + t * cols, 1, alone.data() + t * rows, single, isa);
      }
      for (int64_t batch : {2, 3, 6, 11}) {
        for (ThreadPool* pool : {&single, &pair}) {
          std::vector<float> y(batch * rows, NAN);
          MatMul(view, x.data(), batch, y.data(), *pool, isa);
          for (int64_t i = 0; i < batch * rows; ++i) {
            ASSERT_EQ(y[i], alone[i]) << "batch " << batch << " threads " << pool->num_threads()
                                      << " token " << i / rows << " row " << i % rows;
          }
        }
      }
    }
  }
}

// MatMulShared: several weights with one input (same type, as Q/K/V of one model; or mixed
// types, as K-quant files mix Q4_K and Q6_K, with float and legacy ones in the same call).
// Each output must be bit-identical to a separate MatMul (which the tests above hold to the
// scalar reference) and within Tolerance() of MatMulReference itself, for token counts that take
// the decode path and the batched one (13 is batched on every level), on one thread and two.
TEST_P(MatMulTest, SharedInputEqualsSeparateMatMuls) {
  const cpu::Isa isa = GetParam();
  ThreadPool single(1), pair(2);
  std::vector<std::vector<DType>> sets;
  for (DType dtype : kFormats) sets.push_back({dtype, dtype, dtype});
  sets.push_back({DType::kQ4_1, DType::kQ4_0, DType::kQ8_0});
  sets.push_back({DType::kQ4_K, DType::kQ6_K, DType::kQ4_0, DType::kF16});
  sets.push_back({DType::kQ5_K, DType::kQ8_0, DType::kBF16});
  const int64_t rows_of[] = {37, 13, 64, 5};  // tails of every row tile size
  uint32_t seed = 1000;
  for (const std::vector<DType>& set : sets) {
    for (int64_t cols : {256, 576, 1536}) {
      bool ok = true;
      for (DType dtype : set) ok &= RowBytes(dtype, cols).has_value();
      if (!ok) continue;
      for (int64_t num_tokens : {1, 2, 3, 7, 13}) {
        std::string name;
        for (DType dtype : set) name += std::string(DTypeName(dtype)) + " ";
        SCOPED_TRACE(name + "cols=" + std::to_string(cols) +
                     " tokens=" + std::to_string(num_tokens));
        std::vector<Problem> problems;
        for (size_t i = 0; i < set.size(); ++i) {
          problems.push_back(MakeProblem(set[i], {rows_of[i], cols, num_tokens}, seed++));
        }
        const std::vector<float>& x = problems[0].x;  // the shared input
        for (ThreadPool* pool : {&single, &pair}) {
          std::vector<std::vector<float>> shared(set.size()), separate(set.size());
          std::vector<MatMulOutput> products;
          for (size_t i = 0; i < set.size(); ++i) {
            shared[i].assign(num_tokens * rows_of[i], NAN);
            separate[i].assign(num_tokens * rows_of[i], NAN);
            products.push_back({problems[i].view, shared[i].data()});
            MatMul(problems[i].view, x.data(), num_tokens, separate[i].data(), *pool, isa);
          }
          MatMulShared(products, x.data(), num_tokens, *pool, isa);
          for (size_t i = 0; i < set.size(); ++i) {
            const WeightView& w = problems[i].view;
            std::vector<float> ref(num_tokens * w.rows), w_row(cols);
            MatMulReference(w, x.data(), num_tokens, ref.data());
            const int64_t row_bytes = static_cast<int64_t>(*RowBytes(w.dtype, cols));
            const bool quantized =
                w.dtype != DType::kF32 && w.dtype != DType::kF16 && w.dtype != DType::kBF16;
            for (int64_t r = 0; r < w.rows; ++r) {
              DequantizeRow(w.dtype, problems[i].weights.data() + r * row_bytes, w_row.data(),
                            cols);
              for (int64_t t = 0; t < num_tokens; ++t) {
                const int64_t k = t * w.rows + r;
                ASSERT_EQ(shared[i][k], separate[i][k])
                    << "product " << i << " threads " << pool->num_threads() << " t=" << t
                    << " r=" << r;
                ASSERT_LE(std::fabs(static_cast<double>(shared[i][k]) - ref[k]),
                          Tolerance(w_row, x.data() + t * cols, cols, quantized))
                    << "product " << i << " t=" << t << " r=" << r;
              }
            }
          }
        }
      }
    }
  }
}

// Each level's activation quantizer gives exactly the scalar one's int16 codes and scales
// (blocks of zeros, outliers, values on rounding ties, negative zero).
TEST_P(MatMulTest, ActivationQuantizerMatchesScalar) {
  const cpu::Isa isa = GetParam();
  const cpu::MatMulKernels& kernels = isa == cpu::Isa::kAvx512 ? cpu::Avx512MatMulKernels()
                                      : isa == cpu::Isa::kAvx2 ? cpu::Avx2MatMulKernels()
                                                               : cpu::ScalarMatMulKernels();
  if (kernels.quantize == nullptr) GTEST_SKIP() << "level uses the scalar quantizer";
  const int64_t num_blocks = 24;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(32 * num_blocks);
  for (float& v : x) v = normal(rng);
  for (int i = 0; i < 32; ++i) x[32 + i] = 0.0f;
  x[64] = -0.0f;
  for (int64_t j = 3; j < num_blocks; j += 3) x[32 * j + j % 32] = 1000.0f * (j % 2 ? 1 : -1);
  for (int i = 0; i < 32; ++i) x[32 * 5 + i] = (i - 16) + 0.5f;  // amax 16 -> many ties
  x[32 * 5] = 32767.0f / 2048;
  std::vector<int16_t> q_want(x.size()), q_got(x.size());
  std::vector<float> d_want(num_blocks), d_got(num_blocks), s_want(2 * num_blocks),
      s_got(2 * num_blocks);
  cpu::QuantizeActivationRowScalar(x.data(), num_blocks, q_want.data(), d_want.data(),
                                   s_want.data());
  kernels.quantize(x.data(), num_blocks, q_got.data(), d_got.data(), s_got.data());
  EXPECT_EQ(q_got, q_want);
  EXPECT_EQ(d_got, d_want);
  EXPECT_EQ(s_got, s_want);
}

// The AVX-512 legacy kernel's numerics (top of src/kernels/cpu/matmul_legacy_avx512.cc) stated
// in scalar code: per row and token, the exact integer dot isum of each block, then one float
// accumulator y = fma(float(isum), dw * dx, y) (Q4_1: then y = fma(m, dx * sum(codes), y)),
// blocks in order.
std::vector<float> LegacyAvx512Oracle(const WeightView& w, const float* x, int64_t num_tokens) {
  const int64_t nb = w.cols / 32;
  const int block_bytes = w.dtype == DType::kQ8_0 ? 34 : w.dtype == DType::kQ4_1 ? 20 : 18;
  const int qs_offset = w.dtype == DType::kQ4_1 ? 4 : 2;
  const auto* data = static_cast<const uint8_t*>(w.data);
  const auto f16 = [](const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return Fp16ToFp32(h);
  };
  std::vector<float> y(num_tokens * w.rows);
  std::vector<int16_t> qs(32 * nb);
  std::vector<float> d(nb), s16(2 * nb);
  for (int64_t t = 0; t < num_tokens; ++t) {
    cpu::QuantizeActivationRowScalar(x + t * w.cols, nb, qs.data(), d.data(), s16.data());
    for (int64_t r = 0; r < w.rows; ++r) {
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* block = data + (r * nb + b) * block_bytes;
        const int16_t* xq = qs.data() + 32 * b;
        int32_t isum = 0, xsum = 0;
        for (int i = 0; i < 32; ++i) {
          int32_t code;
          if (w.dtype == DType::kQ8_0) {
            code = static_cast<int8_t>(block[qs_offset + i]);
          } else {
            const uint8_t byte = block[qs_offset + i % 16];
            code = i < 16 ? byte & 15 : byte >> 4;
            if (w.dtype == DType::kQ4_0) code -= 8;
          }
          isum += code * xq[i];
          xsum += xq[i];
        }
        const float scale = f16(block) * d[b];
        acc = std::fma(static_cast<float>(isum), scale, acc);
        if (w.dtype == DType::kQ4_1) {
          const float sx = d[b] * static_cast<float>(xsum);
          acc = std::fma(f16(block + 2), sx, acc);
        }
      }
      y[t * w.rows + r] = acc;
    }
  }
  return y;
}

// The AVX-512 kernel for Q4_0, Q4_1 and Q8_0 follows its stated numerics bit for bit, in the
// decode path (up to 10 tokens: pairs and an odd one) and the batched one (11+: token tiles and
// tails, partial panels,
// partial groups, several chunks of blocks), on one thread and two.
TEST(MatMulLegacyAvx512, EqualsScalarStatementOfItsNumerics) {
  if (!cpu::IsaSupported(cpu::Isa::kAvx512)) GTEST_SKIP() << "CPU has no AVX-512 VNNI";
  ThreadPool single(1), pair(2);
  uint32_t seed = 500;
  for (DType dtype : {DType::kQ4_0, DType::kQ4_1, DType::kQ8_0}) {
    for (int64_t cols : {96, 576, 2080}) {
      for (int64_t rows : {5, 16, 45}) {
        for (int64_t num_tokens : {1, 2, 3, 8, 13}) {
          SCOPED_TRACE(std::string(DTypeName(dtype)) + " rows=" + std::to_string(rows) +
                       " cols=" + std::to_string(cols) + " tokens=" + std::to_string(num_tokens));
          const Problem p = MakeProblem(dtype, {rows, cols, num_tokens}, seed++);
          const std::vector<float> want = LegacyAvx512Oracle(p.view, p.x.data(), num_tokens);
          ThreadPool& pool = seed % 2 ? pair : single;
          std::vector<float> y(num_tokens * rows, NAN);
          MatMul(p.view, p.x.data(), num_tokens, y.data(), pool, cpu::Isa::kAvx512);
          for (int64_t i = 0; i < num_tokens * rows; ++i) {
            ASSERT_EQ(y[i], want[i]) << "t=" << i / rows << " r=" << i % rows;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isas, MatMulTest, ::testing::ValuesIn(cpu::SupportedIsas()),
                         [](const auto& info) { return std::string(cpu::IsaName(info.param)); });

TEST(MatMul, GetRowsMatchesDequantize) {
  for (DType dtype : kFormats) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    Problem p = MakeProblem(dtype, {9, 256, 1}, 99);
    const int32_t ids[] = {8, 0, 3, 3};
    std::vector<float> got(4 * 256), want(256);
    GetRows(p.view, ids, 4, got.data());
    const int64_t row_bytes = static_cast<int64_t>(*RowBytes(dtype, 256));
    for (int i = 0; i < 4; ++i) {
      DequantizeRow(dtype, p.weights.data() + ids[i] * row_bytes, want.data(), 256);
      for (int c = 0; c < 256; ++c) ASSERT_EQ(got[i * 256 + c], want[c]) << i << " " << c;
    }
  }
}

TEST(MatMul, DispatchListsScalarFirst) {
  const auto isas = cpu::SupportedIsas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), cpu::Isa::kScalar);
  EXPECT_EQ(isas.back(), cpu::DetectedIsa());
  EXPECT_TRUE(cpu::IsaSupported(cpu::ActiveIsa()));
}

}  // namespace
}  // namespace cleave::kernels
