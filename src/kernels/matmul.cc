#include "kernels/matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/status.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/quant_formats.h"

namespace cleave::kernels {
namespace {

bool IsFloatType(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16;
}

void CheckWeight(const WeightView& w) {
  CLEAVE_CHECK(IsSupportedWeightType(w.dtype), "MatMul: unsupported weight type {}",
               DTypeName(w.dtype));
  CLEAVE_CHECK(RowBytes(w.dtype, w.cols).has_value(),
               "MatMul: {} columns is not a whole number of {} blocks", w.cols, DTypeName(w.dtype));
}

const cpu::MatMulKernels& KernelsFor(cpu::Isa isa) {
  CLEAVE_CHECK(cpu::IsaSupported(isa), "ISA {} is not supported by this CPU", cpu::IsaName(isa));
  switch (isa) {
    case cpu::Isa::kAvx512:
      return cpu::Avx512MatMulKernels();
    case cpu::Isa::kAvx2:
      return cpu::Avx2MatMulKernels();
    case cpu::Isa::kScalar:
      break;
  }
  return cpu::ScalarMatMulKernels();
}

// Scratch for quantized activations, reused across calls on the same thread.
struct ActivationBuffer {
  std::vector<int16_t> qs_storage;
  std::vector<float> d;
  std::vector<float> s16;
};

cpu::QuantizedActivations QuantizeActivations(const float* x, int64_t num_tokens, int64_t cols,
                                              cpu::QuantizeRowFn quantize_row,
                                              ActivationBuffer& buf, ThreadPool& pool) {
  cpu::QuantizedActivations q;
  q.num_tokens = num_tokens;
  q.cols = cols;
  q.num_blocks = cols / 32;
  q.block_stride = (q.num_blocks + 7) / 8 * 8;
  const size_t qs_elems = static_cast<size_t>(num_tokens * q.block_stride * 32);
  buf.qs_storage.assign(qs_elems + 32, 0);
  buf.d.assign(num_tokens * q.block_stride, 0.0f);
  buf.s16.assign(num_tokens * q.block_stride * 2, 0.0f);
  const auto base = reinterpret_cast<uintptr_t>(buf.qs_storage.data());
  q.qs = buf.qs_storage.data() + ((64 - base % 64) % 64) / sizeof(int16_t);
  q.d = buf.d.data();
  q.s16 = buf.s16.data();
  pool.ParallelFor(num_tokens, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      quantize_row(x + t * cols, q.num_blocks, q.qs + t * q.block_stride * 32,
                   q.d + t * q.block_stride, q.s16 + t * q.block_stride * 2);
    }
  });
  return q;
}

}  // namespace

void MatMul(const WeightView& w, const float* x, int64_t num_tokens, float* y, ThreadPool& pool,
            cpu::Isa isa) {
  CheckWeight(w);
  if (num_tokens <= 0 || w.rows <= 0) return;
  const cpu::MatMulKernels& kernels = KernelsFor(isa);
  if (kernels.direct != nullptr && kernels.direct(w, x, num_tokens, y, pool)) return;
  if (IsFloatType(w.dtype)) {
    pool.ParallelFor(w.rows, kernels.row_grain, [&](int64_t begin, int64_t end) {
      kernels.floating(w, x, num_tokens, begin, end, y);
    });
    return;
  }
  thread_local ActivationBuffer buffer;
  const cpu::QuantizedActivations q = QuantizeActivations(
      x, num_tokens, w.cols,
      kernels.quantize != nullptr ? kernels.quantize : cpu::QuantizeActivationRowScalar, buffer,
      pool);
  pool.ParallelFor(w.rows, kernels.row_grain,
                   [&](int64_t begin, int64_t end) { kernels.quantized(w, q, begin, end, y); });
}

void MatMul(const WeightView& w, const float* x, int64_t num_tokens, float* y, ThreadPool& pool) {
  MatMul(w, x, num_tokens, y, pool, cpu::ActiveIsa());
}

void MatMulReference(const WeightView& w, const float* x, int64_t num_tokens, float* y) {
  CheckWeight(w);
  const int64_t row_bytes = static_cast<int64_t>(*RowBytes(w.dtype, w.cols));
  std::vector<float> row(w.cols);
  for (int64_t r = 0; r < w.rows; ++r) {
    DequantizeRow(w.dtype, static_cast<const uint8_t*>(w.data) + r * row_bytes, row.data(), w.cols);
    for (int64_t t = 0; t < num_tokens; ++t) {
      const float* xt = x + t * w.cols;
      double sum = 0;
      for (int64_t c = 0; c < w.cols; ++c) sum += static_cast<double>(row[c]) * xt[c];
      y[t * w.rows + r] = static_cast<float>(sum);
    }
  }
}

void GetRows(const WeightView& w, const int32_t* ids, int64_t n, float* dst) {
  CheckWeight(w);
  const int64_t row_bytes = static_cast<int64_t>(*RowBytes(w.dtype, w.cols));
  for (int64_t i = 0; i < n; ++i) {
    CLEAVE_CHECK(ids[i] >= 0 && ids[i] < w.rows, "GetRows: id {} out of range [0, {})", ids[i],
                 w.rows);
    DequantizeRow(w.dtype, static_cast<const uint8_t*>(w.data) + ids[i] * row_bytes,
                  dst + i * w.cols, w.cols);
  }
}

}  // namespace cleave::kernels
