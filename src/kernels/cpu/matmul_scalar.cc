// Portable MatMul kernels: the scalar reference the SIMD levels are tested against, and the
// fallback on CPUs without AVX2.
//
// Every quantized format is first unpacked to one common form per row: codes q (uint8, or
// int8 for Q8_0) in element order, and per group g of 16 elements a scale a[g] and an offset
// b[g] with  w = a[g] * q + b[g].  A dot product with activations x ~= dx * xq then is
//   sum_g  a[g] * dx * sum_{i in g} q_i xq_i  +  b[g] * s16[g]
// with the integer inner sums exact.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/fp16.h"
#include "core/status.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/quant_formats.h"

namespace cleave::kernels::cpu {
namespace {

struct UnpackedRow {
  std::vector<uint8_t> q;  // [cols]
  std::vector<float> a;    // [cols / 16]
  std::vector<float> b;    // [cols / 16]
};

void SetGroup32(UnpackedRow& u, int64_t block, float a, float b) {
  u.a[2 * block] = u.a[2 * block + 1] = a;
  u.b[2 * block] = u.b[2 * block + 1] = b;
}

void UnpackRow(DType dtype, const uint8_t* row, int64_t cols, UnpackedRow& u) {
  u.q.resize(cols);
  u.a.resize(cols / 16);
  u.b.resize(cols / 16);
  uint8_t* q = u.q.data();
  switch (dtype) {
    case DType::kQ8_0:
      for (int64_t j = 0; j < cols / kQK; ++j) {
        const auto& blk = reinterpret_cast<const BlockQ8_0*>(row)[j];
        std::memcpy(q + kQK * j, blk.qs, kQK);
        SetGroup32(u, j, Fp16ToFp32(blk.d), 0);
      }
      return;
    case DType::kQ4_0:
    case DType::kQ4_1:
      for (int64_t j = 0; j < cols / kQK; ++j) {
        const uint8_t* qs;
        float d, b;
        if (dtype == DType::kQ4_0) {
          const auto& blk = reinterpret_cast<const BlockQ4_0*>(row)[j];
          qs = blk.qs;
          d = Fp16ToFp32(blk.d);
          b = -8 * d;
        } else {
          const auto& blk = reinterpret_cast<const BlockQ4_1*>(row)[j];
          qs = blk.qs;
          d = Fp16ToFp32(blk.d);
          b = Fp16ToFp32(blk.m);
        }
        for (int l = 0; l < 16; ++l) {
          q[kQK * j + l] = qs[l] & 0x0f;
          q[kQK * j + 16 + l] = qs[l] >> 4;
        }
        SetGroup32(u, j, d, b);
      }
      return;
    case DType::kQ4_K:
    case DType::kQ5_K:
      for (int64_t i = 0; i < cols / kQK_K; ++i) {
        const uint8_t *scales, *qh = nullptr, *qs;
        float d, dmin;
        if (dtype == DType::kQ4_K) {
          const auto& blk = reinterpret_cast<const BlockQ4_K*>(row)[i];
          scales = blk.scales;
          qs = blk.qs;
          d = Fp16ToFp32(blk.d);
          dmin = Fp16ToFp32(blk.dmin);
        } else {
          const auto& blk = reinterpret_cast<const BlockQ5_K*>(row)[i];
          scales = blk.scales;
          qh = blk.qh;
          qs = blk.qs;
          d = Fp16ToFp32(blk.d);
          dmin = Fp16ToFp32(blk.dmin);
        }
        for (int j = 0; j < 8; ++j) {
          uint8_t sc, m;
          UnpackKScaleMin(scales, j, &sc, &m);
          SetGroup32(u, 8 * i + j, d * sc, -dmin * m);
          for (int l = 0; l < 32; ++l) {
            int v = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0f;
            if (qh != nullptr) v |= ((qh[l] >> j) & 1) << 4;
            q[kQK_K * i + 32 * j + l] = static_cast<uint8_t>(v);
          }
        }
      }
      return;
    case DType::kQ6_K:
      for (int64_t i = 0; i < cols / kQK_K; ++i) {
        const auto& blk = reinterpret_cast<const BlockQ6_K*>(row)[i];
        const float d = Fp16ToFp32(blk.d);
        for (int g = 0; g < 16; ++g) {
          u.a[16 * i + g] = d * blk.scales[g];
          u.b[16 * i + g] = -32 * d * blk.scales[g];
        }
        for (int e = 0; e < kQK_K; ++e) {
          const int h = e / 128, r = e % 128;
          const int lo = (blk.ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0f;
          const int hi = (blk.qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
          q[kQK_K * i + e] = static_cast<uint8_t>(lo | (hi << 4));
        }
      }
      return;
    default:
      CLEAVE_CHECK(false, "no scalar kernel for {}", DTypeName(dtype));
  }
}

void QuantizedScalar(const WeightView& w, const QuantizedActivations& x, int64_t row_begin,
                     int64_t row_end, float* y) {
  const int64_t row_bytes = static_cast<int64_t>(*RowBytes(w.dtype, w.cols));
  const bool is_signed = w.dtype == DType::kQ8_0;
  const int64_t num_groups = w.cols / 16;
  UnpackedRow u;
  for (int64_t r = row_begin; r < row_end; ++r) {
    UnpackRow(w.dtype, static_cast<const uint8_t*>(w.data) + r * row_bytes, w.cols, u);
    for (int64_t t = 0; t < x.num_tokens; ++t) {
      const int16_t* xq = x.token_qs(t);
      const float* xd = x.token_d(t);
      const float* s16 = x.token_s16(t);
      float sum = 0;
      for (int64_t g = 0; g < num_groups; ++g) {
        int32_t dot = 0;
        for (int i = 0; i < 16; ++i) {
          const int32_t wq = is_signed ? static_cast<int8_t>(u.q[16 * g + i]) : u.q[16 * g + i];
          dot += wq * xq[16 * g + i];
        }
        sum += u.a[g] * xd[g / 2] * static_cast<float>(dot) + u.b[g] * s16[g];
      }
      y[t * w.rows + r] = sum;
    }
  }
}

float LoadFloat(DType dtype, const void* row, int64_t c) {
  switch (dtype) {
    case DType::kF16:
      return Fp16ToFp32(static_cast<const uint16_t*>(row)[c]);
    case DType::kBF16:
      return Bf16ToFp32(static_cast<const uint16_t*>(row)[c]);
    default:
      return static_cast<const float*>(row)[c];
  }
}

void FloatScalar(const WeightView& w, const float* x, int64_t num_tokens, int64_t row_begin,
                 int64_t row_end, float* y) {
  const int64_t row_bytes = static_cast<int64_t>(*RowBytes(w.dtype, w.cols));
  std::vector<float> row(w.cols);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const void* src = static_cast<const uint8_t*>(w.data) + r * row_bytes;
    for (int64_t c = 0; c < w.cols; ++c) row[c] = LoadFloat(w.dtype, src, c);
    for (int64_t t = 0; t < num_tokens; ++t) {
      const float* xt = x + t * w.cols;
      float sum = 0;
      for (int64_t c = 0; c < w.cols; ++c) sum += row[c] * xt[c];
      y[t * w.rows + r] = sum;
    }
  }
}

}  // namespace

void QuantizeActivationRowScalar(const float* x, int64_t num_blocks, int16_t* qs, float* d,
                                 float* s16) {
  for (int64_t j = 0; j < num_blocks; ++j) {
    const float* xb = x + 32 * j;
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float scale = amax / 32767;
    const float inv = amax > 0 ? 32767 / amax : 0;
    int32_t sum[2] = {0, 0};
    for (int i = 0; i < 32; ++i) {
      const auto q = static_cast<int32_t>(std::nearbyint(xb[i] * inv));
      qs[32 * j + i] = static_cast<int16_t>(q);
      sum[i / 16] += q;
    }
    d[j] = scale;
    s16[2 * j] = scale * static_cast<float>(sum[0]);
    s16[2 * j + 1] = scale * static_cast<float>(sum[1]);
  }
}

const MatMulKernels& ScalarMatMulKernels() {
  static const MatMulKernels kernels{QuantizedScalar, FloatScalar, 1};
  return kernels;
}

}  // namespace cleave::kernels::cpu
