// MatMul throughput per ISA x weight format x shape.
//
//   decode  (num_tokens = 1):   reports weight GB/s (bytes of W read per second): the kernel
//                               should approach memory bandwidth on matrices larger than cache.
//   batch16 (num_tokens = 16):  GFLOP/s; what one step of batch-16 decode runs.
//   prefill (num_tokens = 128): reports GFLOP/s (2 * rows * cols * tokens per second).
//
// Shapes: 1536 x 576 (SmolLM2-135M FFN up/gate), 576 x 1536 (its down), 49152 x 576 (its
// output projection), 8192 x 2048 (Llama-3.2-1B FFN up/gate) and 2048 x 8192 (its down);
// qkv/*: SmolLM2's Q, K and V as three MatMuls or one MatMulShared.
// Run e.g.  matmul_bench --benchmark_filter='avx512/q4_0' ; threads are the last argument.
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/matmul.h"
#include "kernels/quant_formats.h"

namespace cleave::kernels {
namespace {

struct Matrix {
  std::vector<uint8_t> bytes;
  WeightView view;
};

// Several copies of the matrix so decode benchmarks of small shapes read from memory rather
// than from a warm cache, as a forward pass (which touches every layer once) does.
Matrix MakeMatrix(DType dtype, int64_t rows, int64_t cols, int copies) {
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const int64_t row_bytes = static_cast<int64_t>(*RowBytes(dtype, cols));
  Matrix m;
  m.bytes.resize(row_bytes * rows * copies);
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) v = normal(rng);
    QuantizeRow(dtype, row.data(), m.bytes.data() + r * row_bytes, cols);
  }
  for (int c = 1; c < copies; ++c) {
    std::copy(m.bytes.begin(), m.bytes.begin() + row_bytes * rows,
              m.bytes.begin() + c * row_bytes * rows);
  }
  m.view = WeightView{dtype, m.bytes.data(), rows, cols};
  return m;
}

void BM_MatMul(benchmark::State& state, cpu::Isa isa, DType dtype, int64_t rows, int64_t cols,
               int64_t num_tokens) {
  const int threads = static_cast<int>(state.range(0));
  const int64_t matrix_bytes = static_cast<int64_t>(*RowBytes(dtype, cols)) * rows;
  const int copies = num_tokens == 1 ? static_cast<int>(std::max<int64_t>(
                                           1, (128ll << 20) / std::max<int64_t>(matrix_bytes, 1)))
                                     : 1;
  Matrix m = MakeMatrix(dtype, rows, cols, std::min(copies, 64));
  const int num_copies = std::min(copies, 64);
  std::vector<float> x(num_tokens * cols), y(num_tokens * rows);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : x) v = normal(rng);
  ThreadPool pool(threads);
  int copy = 0;
  for (auto _ : state) {
    WeightView w = m.view;
    w.data = m.bytes.data() + copy * matrix_bytes;
    copy = (copy + 1) % num_copies;
    MatMul(w, x.data(), num_tokens, y.data(), pool, isa);
    benchmark::DoNotOptimize(y.data());
  }
  if (num_tokens == 1) {
    state.counters["GB/s"] = benchmark::Counter(static_cast<double>(matrix_bytes) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * rows * cols * num_tokens * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

// One decode step's attention-input products of SmolLM2-135M (Q 576x576, K and V 192x576, Q4_1)
// as three MatMul calls or one MatMulShared (one activation quantization, one parallel
// section); weight GB/s. Copies as in BM_MatMul so the weights come from memory.
void BM_Qkv(benchmark::State& state, bool shared) {
  const int threads = static_cast<int>(state.range(0));
  const DType dtype = DType::kQ4_1;
  const int64_t cols = 576, rows[3] = {576, 192, 192};
  constexpr int kCopies = 64;  // 3 x 64 x 0.25 MB: well beyond the caches
  std::vector<Matrix> ms;
  int64_t bytes = 0;
  for (int64_t r : rows) {
    ms.push_back(MakeMatrix(dtype, r, cols, kCopies));
    bytes += static_cast<int64_t>(*RowBytes(dtype, cols)) * r;
  }
  std::vector<float> x(cols), y[3];
  for (int i = 0; i < 3; ++i) y[i].resize(rows[i]);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : x) v = normal(rng);
  ThreadPool pool(threads);
  int copy = 0;
  for (auto _ : state) {
    MatMulOutput products[3];
    for (int i = 0; i < 3; ++i) {
      WeightView w = ms[i].view;
      w.data = ms[i].bytes.data() + copy * static_cast<int64_t>(*RowBytes(dtype, cols)) * rows[i];
      products[i] = {w, y[i].data()};
    }
    copy = (copy + 1) % kCopies;
    if (shared) {
      MatMulShared(products, x.data(), 1, pool);
    } else {
      for (const MatMulOutput& p : products) MatMul(p.w, x.data(), 1, p.y, pool);
    }
    benchmark::DoNotOptimize(y[0].data());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

void RegisterAll() {
  for (bool shared : {false, true}) {
    auto* b = benchmark::RegisterBenchmark(shared ? "qkv/q4_1/shared" : "qkv/q4_1/separate", BM_Qkv,
                                           shared);
    b->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
  }
  const DType formats[] = {DType::kQ4_0, DType::kQ4_1, DType::kQ8_0, DType::kQ4_K, DType::kQ5_K,
                           DType::kQ6_K, DType::kF16,  DType::kBF16, DType::kF32};
  struct Shape {
    int64_t rows, cols;
  };
  // SmolLM2-135M FFN gate/up, its down projection and its Q8_0 output (tied embeddings), and
  // Llama-3.2-1B FFN gate/up and down.
  const Shape shapes[] = {{1536, 576}, {576, 1536}, {49152, 576}, {8192, 2048}, {2048, 8192}};
  for (cpu::Isa isa : cpu::SupportedIsas()) {
    for (DType dtype : formats) {
      for (const Shape& s : shapes) {
        if (!RowBytes(dtype, s.cols).has_value()) continue;  // K-quants need cols % 256 == 0
        for (int64_t tokens : {1, 16, 128}) {
          const std::string name = std::string(cpu::IsaName(isa)) + "/" +
                                   std::string(DTypeName(dtype)) + "/" + std::to_string(s.rows) +
                                   "x" + std::to_string(s.cols) + "/" +
                                   (tokens == 1    ? "decode"
                                    : tokens == 16 ? "batch16"
                                                   : "prefill128");
          auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_MatMul, isa, dtype, s.rows,
                                                 s.cols, tokens);
          b->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
        }
      }
    }
  }
}

}  // namespace
}  // namespace cleave::kernels

int main(int argc, char** argv) {
  cleave::kernels::RegisterAll();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
