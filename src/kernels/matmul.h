// Matrix products of a weight matrix in any supported format (kernels/quant_formats.h) with F32
// activations, the hot loop of every linear layer.
//
// Scheme: quantized weights multiply activations that MatMul quantizes once per call to int16
// blocks of 32 (scale max|x| / 32767 each, plus block sums for the formats' offset/min terms),
// using int16 x int16 -> int32 dot products (int8 activations lose too much on real models'
// outlier channels: see cpu/matmul_kernels.h); F32/F16/BF16 weights use float FMA. Work is split
// over output rows across the pool; for several tokens each weight block loaded is reused for a
// tile of tokens.
#pragma once

#include <cstdint>
#include <span>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "kernels/cpu/dispatch.h"

namespace cleave::kernels {

// A row-major weight matrix: `rows` output features, each a row of `cols` inputs stored as
// RowBytes(dtype, cols) bytes, rows back to back (as GGUF stores [cols, rows] tensors).
// Non-owning; data usually points into a mmap'd GGUF file.
struct WeightView {
  DType dtype;
  const void* data;
  int64_t rows;
  int64_t cols;
};

// y[t * rows + r] = sum_c x[t * cols + c] * W[r, c] for t < num_tokens, r < rows.
// x: [num_tokens, cols], y: [num_tokens, rows] (must not alias x). w.dtype must satisfy
// IsSupportedWeightType and cols must be a whole number of blocks (both CHECKed).
// Uses cpu::ActiveIsa(). Calls pool.Run(); like the pool, not reentrant.
void MatMul(const WeightView& w, const float* x, int64_t num_tokens, float* y, ThreadPool& pool);
// The same on a given ISA level (must be supported; for tests and benchmarks).
void MatMul(const WeightView& w, const float* x, int64_t num_tokens, float* y, ThreadPool& pool,
            cpu::Isa isa);

// One product of MatMulShared: y = x W^T, y: [num_tokens, w.rows].
struct MatMulOutput {
  WeightView w;
  float* y;
};

// Several weights multiplying the same activations (Q, K and V; gate and up): the activations
// are quantized once and all products' row ranges run in one parallel section (one fork-join
// instead of one or two per weight). Every y is bit-identical to what MatMul(w, x, num_tokens,
// y, pool) gives. All weights must have the same cols and a supported type, at most
// kMaxSharedProducts of them (CHECKed); no y may alias x or another y.
inline constexpr size_t kMaxSharedProducts = 8;
void MatMulShared(std::span<const MatMulOutput> products, const float* x, int64_t num_tokens,
                  ThreadPool& pool);
void MatMulShared(std::span<const MatMulOutput> products, const float* x, int64_t num_tokens,
                  ThreadPool& pool, cpu::Isa isa);

// Scalar reference of MatMul: dequantizes each row (DequantizeRow) and accumulates in double
// with the unquantized activations. Slow; for tests.
void MatMulReference(const WeightView& w, const float* x, int64_t num_tokens, float* y);

// Embedding lookup: dst[i * cols + c] = W[ids[i], c] dequantized, for i < n. Each id must be in
// [0, rows) (CHECKed).
void GetRows(const WeightView& w, const int32_t* ids, int64_t n, float* dst);

}  // namespace cleave::kernels
