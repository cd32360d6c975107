// Internal interface between the portable MatMul driver (kernels/matmul.cc) and the per-ISA
// kernel files matmul_{scalar,avx2,avx512}.cc. Not for use outside kernels/.
#pragma once

#include <cstdint>

#include "kernels/matmul.h"

namespace cleave::kernels::cpu {

// Activations quantized for integer dot products: for each token, blocks of 32 values
//   x[32 j + i] ~= d[j] * qs[32 j + i],  d[j] = max_i |x[32 j + i]| / 32767,  qs in [-32767, 32767]
// plus s16[2 j + h] = d[j] * sum_{i < 16} qs[32 j + 16 h + i], the (quantized) sum of each half
// block, which the weight formats' offset/min terms multiply. int16 rather than int8: real
// hidden states have outlier channels hundreds of times larger than the rest of their block,
// and an int8 grid (d = amax / 127) rounds everything else in that block to 0 or 1 step.
// Per-token arrays are padded to block_stride blocks (a multiple of 8) with zeros, so kernels
// may read whole groups of 8.
//
// Overflow: |qs| <= 32767 and weight codes |q| <= 128 give products < 2^22 and one block's sum
// < 2^27; a kernel that folds Q6_K's int8 per-16 scale into its codes (|(q - 32) * sc| <=
// 4096) keeps at most 4 products per int32 lane (< 2^30). Partial sums are converted to float
// once per block, so nothing accumulates across blocks in int32.
struct QuantizedActivations {
  int64_t num_tokens = 0;
  int64_t cols = 0;
  int64_t num_blocks = 0;    // cols / 32
  int64_t block_stride = 0;  // num_blocks rounded up to a multiple of 8
  int16_t* qs = nullptr;     // [num_tokens][block_stride * 32], 64-byte aligned rows
  float* d = nullptr;        // [num_tokens][block_stride]
  float* s16 = nullptr;      // [num_tokens][block_stride * 2]

  const int16_t* token_qs(int64_t t) const { return qs + t * block_stride * 32; }
  const float* token_d(int64_t t) const { return d + t * block_stride; }
  const float* token_s16(int64_t t) const { return s16 + t * block_stride * 2; }
};

// Quantizes one token row of num_blocks * 32 values as described above (qs[32 * num_blocks],
// d[num_blocks], s16[2 * num_blocks]). Every level produces bit-identical output.
using QuantizeRowFn = void (*)(const float* x, int64_t num_blocks, int16_t* qs, float* d,
                               float* s16);

// Fills y[t * w.rows + r] for every token t and r in [row_begin, row_end).
using QuantMatMulFn = void (*)(const WeightView& w, const QuantizedActivations& x,
                               int64_t row_begin, int64_t row_end, float* y);
using FloatMatMulFn = void (*)(const WeightView& w, const float* x, int64_t num_tokens,
                               int64_t row_begin, int64_t row_end, float* y);

// A whole MatMulShared (or MatMul: one product) done by a level-specific path with its own
// activation layout, only for weights whose types all equal one type `handles` accepts
// (CHECKed): the activations are arranged once and every product's rows run in one section.
using DirectMatMulFn = void (*)(std::span<const MatMulOutput> products, const float* x,
                                int64_t num_tokens, ThreadPool& pool);
using DirectHandlesFn = bool (*)(DType dtype);

struct MatMulKernels {
  QuantMatMulFn quantized;           // Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K
  FloatMatMulFn floating;            // F32, F16, BF16
  int row_grain;                     // rows per kernel tile; ParallelFor ranges are multiples of it
  DirectMatMulFn direct = nullptr;   // used for the types direct_handles accepts
  QuantizeRowFn quantize = nullptr;  // activation quantizer; the scalar one when null
  DirectHandlesFn direct_handles = nullptr;  // set with direct
};

// Scalar activation quantizer (matmul_scalar.cc), the reference for the SIMD ones.
void QuantizeActivationRowScalar(const float* x, int64_t num_blocks, int16_t* qs, float* d,
                                 float* s16);

// One table per ISA; only call the ones IsaSupported() says this CPU can run.
const MatMulKernels& ScalarMatMulKernels();
const MatMulKernels& Avx2MatMulKernels();
const MatMulKernels& Avx512MatMulKernels();

// AVX-512 VNNI (vpdpwssd) path for Q4_0, Q4_1 and Q8_0 (matmul_legacy_avx512.cc), a
// DirectMatMulFn, and its DirectHandlesFn.
void LegacyMatMulAvx512(std::span<const MatMulOutput> products, const float* x, int64_t num_tokens,
                        ThreadPool& pool);
bool LegacyHandlesAvx512(DType dtype);

}  // namespace cleave::kernels::cpu
