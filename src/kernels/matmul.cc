#include "kernels/matmul.h"

#include <algorithm>
#include <array>
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

// The portable driver: activations quantized once (when any weight is quantized), then every
// product's row ranges in one section. Each product's rows start at a multiple of row_grain in
// the combined range, so its ranges are the ones a single-product call gets.
void RunShared(const cpu::MatMulKernels& kernels, std::span<const MatMulOutput> products,
               const float* x, int64_t num_tokens, ThreadPool& pool) {
  bool any_quantized = false;
  for (const MatMulOutput& p : products) any_quantized |= !IsFloatType(p.w.dtype);
  thread_local ActivationBuffer buffer;
  cpu::QuantizedActivations q;
  if (any_quantized) {
    q = QuantizeActivations(
        x, num_tokens, products[0].w.cols,
        kernels.quantize != nullptr ? kernels.quantize : cpu::QuantizeActivationRowScalar, buffer,
        pool);
  }
  const int64_t grain = kernels.row_grain;
  std::array<int64_t, kMaxSharedProducts + 1> offset{};
  for (size_t i = 0; i < products.size(); ++i) {
    offset[i + 1] = offset[i] + (products[i].w.rows + grain - 1) / grain * grain;
  }
  pool.ParallelFor(offset[products.size()], grain, [&](int64_t begin, int64_t end) {
    for (size_t i = 0; i < products.size(); ++i) {
      const WeightView& w = products[i].w;
      const int64_t lo = std::max(begin, offset[i]) - offset[i];
      const int64_t hi = std::min(end, offset[i] + w.rows) - offset[i];
      if (lo >= hi) continue;
      if (IsFloatType(w.dtype)) {
        kernels.floating(w, x, num_tokens, lo, hi, products[i].y);
      } else {
        kernels.quantized(w, q, lo, hi, products[i].y);
      }
    }
  });
}

}  // namespace

void MatMulShared(std::span<const MatMulOutput> products, const float* x, int64_t num_tokens,
                  ThreadPool& pool, cpu::Isa isa) {
  CLEAVE_CHECK(!products.empty() && products.size() <= kMaxSharedProducts,
               "MatMulShared: {} products (1 to {})", products.size(), kMaxSharedProducts);
  for (const MatMulOutput& p : products) {
    CheckWeight(p.w);
    CLEAVE_CHECK(p.w.cols == products[0].w.cols, "MatMulShared: cols {} and {} differ", p.w.cols,
                 products[0].w.cols);
  }
  if (num_tokens <= 0) return;
  const cpu::MatMulKernels& kernels = KernelsFor(isa);
  // Products the level's direct path takes run there (all together when they share a type, so
  // they share its activation layout); the rest share the portable driver's quantization.
  std::array<MatMulOutput, kMaxSharedProducts> direct{}, portable{};
  size_t num_direct = 0, num_portable = 0;
  for (const MatMulOutput& p : products) {
    if (p.w.rows <= 0) continue;
    if (kernels.direct != nullptr && kernels.direct_handles(p.w.dtype)) {
      direct[num_direct++] = p;
    } else {
      portable[num_portable++] = p;
    }
  }
  bool one_type = true;
  for (size_t i = 1; i < num_direct; ++i) one_type &= direct[i].w.dtype == direct[0].w.dtype;
  if (one_type && num_direct > 0) {
    kernels.direct({direct.data(), num_direct}, x, num_tokens, pool);
  } else {
    for (size_t i = 0; i < num_direct; ++i) kernels.direct({&direct[i], 1}, x, num_tokens, pool);
  }
  if (num_portable > 0) RunShared(kernels, {portable.data(), num_portable}, x, num_tokens, pool);
}

void MatMulShared(std::span<const MatMulOutput> products, const float* x, int64_t num_tokens,
                  ThreadPool& pool) {
  MatMulShared(products, x, num_tokens, pool, cpu::ActiveIsa());
}

void MatMul(const WeightView& w, const float* x, int64_t num_tokens, float* y, ThreadPool& pool,
            cpu::Isa isa) {
  const MatMulOutput product{w, y};
  MatMulShared({&product, 1}, x, num_tokens, pool, isa);
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
