#include "kernels/quant_formats.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/fp16.h"
#include "core/status.h"

namespace cleave::kernels {
namespace {

int64_t NumBlocks(DType dtype, int64_t n) {
  const auto block = static_cast<int64_t>(DTypeInfoOf(dtype).block_elems);
  CLEAVE_CHECK(n % block == 0, "{} row of {} elements is not a whole number of blocks",
               DTypeName(dtype), n);
  return n / block;
}

int RoundToInt(float v) {
  return static_cast<int>(std::nearbyint(v));
}

// ---- dequantizers (one block each) ----

void DequantQ8_0(const BlockQ8_0& b, float* y) {
  const float d = Fp16ToFp32(b.d);
  for (int i = 0; i < kQK; ++i) y[i] = d * b.qs[i];
}

void DequantQ4_0(const BlockQ4_0& b, float* y) {
  const float d = Fp16ToFp32(b.d);
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * ((b.qs[j] & 0x0f) - 8);
    y[j + kQK / 2] = d * ((b.qs[j] >> 4) - 8);
  }
}

void DequantQ4_1(const BlockQ4_1& b, float* y) {
  const float d = Fp16ToFp32(b.d);
  const float m = Fp16ToFp32(b.m);
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * (b.qs[j] & 0x0f) + m;
    y[j + kQK / 2] = d * (b.qs[j] >> 4) + m;
  }
}

// Shared by Q4_K and Q5_K: qh may be null (Q4_K).
void DequantKNibbles(float d, float dmin, const uint8_t* scales, const uint8_t* qh,
                     const uint8_t* qs, float* y) {
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    UnpackKScaleMin(scales, j, &sc, &m);
    const float a = d * sc;
    const float b = dmin * m;
    const uint8_t* chunk = qs + 32 * (j / 2);
    const int shift = 4 * (j % 2);
    for (int l = 0; l < 32; ++l) {
      int q = (chunk[l] >> shift) & 0x0f;
      if (qh != nullptr) q |= ((qh[l] >> j) & 1) << 4;
      y[32 * j + l] = a * q - b;
    }
  }
}

void DequantQ6_K(const BlockQ6_K& b, float* y) {
  const float d = Fp16ToFp32(b.d);
  for (int h = 0; h < 2; ++h) {
    for (int r = 0; r < 128; ++r) {
      const int e = 128 * h + r;
      const int lo = (b.ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0f;
      const int hi = (b.qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
      y[e] = d * b.scales[e / 16] * ((lo | (hi << 4)) - 32);
    }
  }
}

// ---- quantizers (one block each) ----

void QuantQ8_0(const float* x, BlockQ8_0* b) {
  float amax = 0;
  for (int i = 0; i < kQK; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127;
  const float id = d != 0 ? 1 / d : 0;
  b->d = Fp32ToFp16(d);
  for (int i = 0; i < kQK; ++i) b->qs[i] = static_cast<int8_t>(RoundToInt(x[i] * id));
}

void QuantQ4_0(const float* x, BlockQ4_0* b) {
  // The value of largest magnitude maps to -8 exactly, so the full 16 codes are used.
  float vmax = 0;
  for (int i = 0; i < kQK; ++i) {
    if (std::fabs(x[i]) > std::fabs(vmax)) vmax = x[i];
  }
  const float d = vmax / -8;
  const float id = d != 0 ? 1 / d : 0;
  b->d = Fp32ToFp16(d);
  for (int j = 0; j < kQK / 2; ++j) {
    const int q0 = std::clamp(RoundToInt(x[j] * id) + 8, 0, 15);
    const int q1 = std::clamp(RoundToInt(x[j + kQK / 2] * id) + 8, 0, 15);
    b->qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

void QuantQ4_1(const float* x, BlockQ4_1* b) {
  float vmin = x[0], vmax = x[0];
  for (int i = 1; i < kQK; ++i) {
    vmin = std::min(vmin, x[i]);
    vmax = std::max(vmax, x[i]);
  }
  const float d = (vmax - vmin) / 15;
  const float id = d != 0 ? 1 / d : 0;
  b->d = Fp32ToFp16(d);
  b->m = Fp32ToFp16(vmin);
  for (int j = 0; j < kQK / 2; ++j) {
    const int q0 = std::clamp(RoundToInt((x[j] - vmin) * id), 0, 15);
    const int q1 = std::clamp(RoundToInt((x[j + kQK / 2] - vmin) * id), 0, 15);
    b->qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

// Best (scale, offset) for x[0..n) on codes 0..nmax with w = scale * q - offset, offset >= 0:
// tries a range of scales around the min/max fit and keeps the least squared error.
void FitScaleMin(const float* x, int n, int nmax, float* scale, float* offset) {
  float vmin = std::min(0.0f, *std::min_element(x, x + n));
  float vmax = *std::max_element(x, x + n);
  if (vmax <= vmin) {
    *scale = 0;
    *offset = -vmin;
    return;
  }
  float best_err = INFINITY;
  for (int step = -6; step <= 6; ++step) {
    const float s = (vmax - vmin) / (nmax + 0.1f * step);
    float err = 0;
    for (int i = 0; i < n; ++i) {
      const int q = std::clamp(RoundToInt((x[i] - vmin) / s), 0, nmax);
      const float diff = s * q + vmin - x[i];
      err += diff * diff;
    }
    if (err < best_err) {
      best_err = err;
      *scale = s;
    }
  }
  *offset = -vmin;
}

// Q4_K / Q5_K: fits each sub-block, then stores sub-scales and mins as 6-bit fractions of the
// block's largest, and re-derives the codes from the stored (rounded) values.
void QuantKNibbles(const float* x, int nmax, uint16_t* d_out, uint16_t* dmin_out, uint8_t* scales,
                   uint8_t* qh, uint8_t* qs) {
  float sub_scale[8], sub_min[8];
  for (int j = 0; j < 8; ++j) FitScaleMin(x + 32 * j, 32, nmax, &sub_scale[j], &sub_min[j]);
  const float max_scale = *std::max_element(sub_scale, sub_scale + 8);
  const float max_min = *std::max_element(sub_min, sub_min + 8);
  const float d = max_scale / 63;
  const float dmin = max_min / 63;
  *d_out = Fp32ToFp16(d);
  *dmin_out = Fp32ToFp16(dmin);
  const float d_stored = Fp16ToFp32(*d_out);
  const float dmin_stored = Fp16ToFp32(*dmin_out);
  uint8_t sc[8], m[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = static_cast<uint8_t>(
        d_stored > 0 ? std::clamp(RoundToInt(sub_scale[j] / d_stored), 0, 63) : 0);
    m[j] = static_cast<uint8_t>(
        dmin_stored > 0 ? std::clamp(RoundToInt(sub_min[j] / dmin_stored), 0, 63) : 0);
  }
  std::memset(scales, 0, 12);
  for (int j = 0; j < 4; ++j) {
    scales[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    scales[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
    scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4));
  }
  if (qh != nullptr) std::memset(qh, 0, 32);
  std::memset(qs, 0, 128);
  for (int j = 0; j < 8; ++j) {
    const float a = d_stored * sc[j];
    const float b = dmin_stored * m[j];
    for (int l = 0; l < 32; ++l) {
      const int q = a > 0 ? std::clamp(RoundToInt((x[32 * j + l] + b) / a), 0, nmax) : 0;
      qs[32 * (j / 2) + l] |= static_cast<uint8_t>((q & 0x0f) << (4 * (j % 2)));
      if (qh != nullptr) qh[l] |= static_cast<uint8_t>(((q >> 4) & 1) << j);
    }
  }
}

void QuantQ6_K(const float* x, BlockQ6_K* b) {
  // Each group of 16 gets a signed scale mapping its largest-magnitude value to code -32;
  // the scales are then stored as int8 multiples of d.
  float group_scale[16];
  for (int g = 0; g < 16; ++g) {
    float vmax = 0;
    for (int i = 0; i < 16; ++i) {
      if (std::fabs(x[16 * g + i]) > std::fabs(vmax)) vmax = x[16 * g + i];
    }
    group_scale[g] = vmax / -32;
  }
  float amax = 0;
  for (float s : group_scale) amax = std::max(amax, std::fabs(s));
  b->d = Fp32ToFp16(amax / 127);
  const float d = Fp16ToFp32(b->d);
  std::memset(b->ql, 0, sizeof(b->ql));
  std::memset(b->qh, 0, sizeof(b->qh));
  for (int g = 0; g < 16; ++g) {
    b->scales[g] =
        static_cast<int8_t>(d > 0 ? std::clamp(RoundToInt(group_scale[g] / d), -128, 127) : 0);
  }
  for (int e = 0; e < kQK_K; ++e) {
    const float a = d * b->scales[e / 16];
    const int q = a != 0 ? std::clamp(RoundToInt(x[e] / a) + 32, 0, 63) : 32;
    const int h = e / 128, r = e % 128;
    b->ql[64 * h + r % 64] |= static_cast<uint8_t>((q & 0x0f) << (4 * (r / 64)));
    b->qh[32 * h + r % 32] |= static_cast<uint8_t>((q >> 4) << (2 * (r / 32)));
  }
}

}  // namespace

bool IsSupportedWeightType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return true;
    default:
      return false;
  }
}

void DequantizeRow(DType dtype, const void* src, float* dst, int64_t n) {
  const int64_t nb = NumBlocks(dtype, n);
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kF16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = Fp16ToFp32(h[i]);
      return;
    }
    case DType::kBF16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFp32(h[i]);
      return;
    }
    case DType::kQ8_0:
      for (int64_t i = 0; i < nb; ++i) {
        DequantQ8_0(static_cast<const BlockQ8_0*>(src)[i], dst + i * kQK);
      }
      return;
    case DType::kQ4_0:
      for (int64_t i = 0; i < nb; ++i) {
        DequantQ4_0(static_cast<const BlockQ4_0*>(src)[i], dst + i * kQK);
      }
      return;
    case DType::kQ4_1:
      for (int64_t i = 0; i < nb; ++i) {
        DequantQ4_1(static_cast<const BlockQ4_1*>(src)[i], dst + i * kQK);
      }
      return;
    case DType::kQ4_K:
      for (int64_t i = 0; i < nb; ++i) {
        const auto& b = static_cast<const BlockQ4_K*>(src)[i];
        DequantKNibbles(Fp16ToFp32(b.d), Fp16ToFp32(b.dmin), b.scales, nullptr, b.qs,
                        dst + i * kQK_K);
      }
      return;
    case DType::kQ5_K:
      for (int64_t i = 0; i < nb; ++i) {
        const auto& b = static_cast<const BlockQ5_K*>(src)[i];
        DequantKNibbles(Fp16ToFp32(b.d), Fp16ToFp32(b.dmin), b.scales, b.qh, b.qs, dst + i * kQK_K);
      }
      return;
    case DType::kQ6_K:
      for (int64_t i = 0; i < nb; ++i) {
        DequantQ6_K(static_cast<const BlockQ6_K*>(src)[i], dst + i * kQK_K);
      }
      return;
    default:
      CLEAVE_CHECK(false, "DequantizeRow: unsupported type {}", DTypeName(dtype));
  }
}

void QuantizeRow(DType dtype, const float* src, void* dst, int64_t n) {
  const int64_t nb = NumBlocks(dtype, n);
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kF16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = Fp32ToFp16(src[i]);
      return;
    }
    case DType::kBF16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = Fp32ToBf16(src[i]);
      return;
    }
    case DType::kQ8_0:
      for (int64_t i = 0; i < nb; ++i) {
        QuantQ8_0(src + i * kQK, static_cast<BlockQ8_0*>(dst) + i);
      }
      return;
    case DType::kQ4_0:
      for (int64_t i = 0; i < nb; ++i) {
        QuantQ4_0(src + i * kQK, static_cast<BlockQ4_0*>(dst) + i);
      }
      return;
    case DType::kQ4_1:
      for (int64_t i = 0; i < nb; ++i) {
        QuantQ4_1(src + i * kQK, static_cast<BlockQ4_1*>(dst) + i);
      }
      return;
    case DType::kQ4_K:
      for (int64_t i = 0; i < nb; ++i) {
        auto* b = static_cast<BlockQ4_K*>(dst) + i;
        QuantKNibbles(src + i * kQK_K, 15, &b->d, &b->dmin, b->scales, nullptr, b->qs);
      }
      return;
    case DType::kQ5_K:
      for (int64_t i = 0; i < nb; ++i) {
        auto* b = static_cast<BlockQ5_K*>(dst) + i;
        QuantKNibbles(src + i * kQK_K, 31, &b->d, &b->dmin, b->scales, b->qh, b->qs);
      }
      return;
    case DType::kQ6_K:
      for (int64_t i = 0; i < nb; ++i) {
        QuantQ6_K(src + i * kQK_K, static_cast<BlockQ6_K*>(dst) + i);
      }
      return;
    default:
      CLEAVE_CHECK(false, "QuantizeRow: unsupported type {}", DTypeName(dtype));
  }
}

}  // namespace cleave::kernels
