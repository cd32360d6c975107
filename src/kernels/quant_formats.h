// Weight formats cleave can compute with, their GGUF/GGML block layouts, and scalar reference
// (de)quantizers.
//
// Every layout below is byte-for-byte what GGUF stores on disk (little-endian, blocks packed
// back to back with no padding), so a mmap'd tensor is used in place. A row of n elements is
// n / kBlockElems blocks. "f16" is IEEE binary16. q is the stored unsigned code; the formula
// under each diagram gives the element value.
//
// Q8_0 (34 bytes, 32 elements)
//   +--------+---------------------------------+
//   | f16 d  | int8 qs[32]   (element i = qs[i])|
//   +--------+---------------------------------+
//   w[i] = d * qs[i]
//
// Q4_0 (18 bytes, 32 elements)
//   +--------+------------------------------------------+
//   | f16 d  | uint8 qs[16]                             |
//   +--------+------------------------------------------+
//              byte j: bits 0..3 = element j, bits 4..7 = element j + 16
//   w[i] = d * (q[i] - 8)
//
// Q4_1 (20 bytes, 32 elements)
//   +--------+--------+---------------------------------+
//   | f16 d  | f16 m  | uint8 qs[16]  (nibbles as Q4_0) |
//   +--------+--------+---------------------------------+
//   w[i] = d * q[i] + m
//
// Q4_K (144 bytes, 256 elements = 8 sub-blocks of 32)
//   +-------+----------+--------------------+------------------------------+
//   | f16 d | f16 dmin | uint8 scales[12]   | uint8 qs[128]                |
//   +-------+----------+--------------------+------------------------------+
//   qs is 4 chunks of 32 bytes; chunk c holds sub-block 2c in the low nibbles and sub-block
//   2c + 1 in the high nibbles: element 64c + l = qs[32c + l] & 15, element 64c + 32 + l =
//   qs[32c + l] >> 4 (l < 32).
//   scales packs eight 6-bit scales sc[j] and eight 6-bit mins m[j]:
//     byte  0..3 : bits 0..5 = sc[0..3], bits 6..7 = high 2 bits of sc[4..7]
//     byte  4..7 : bits 0..5 = m[0..3],  bits 6..7 = high 2 bits of m[4..7]
//     byte 8..11 : bits 0..3 = low 4 bits of sc[4..7], bits 4..7 = low 4 bits of m[4..7]
//   w = d * sc[j] * q - dmin * m[j]   for an element of sub-block j
//
// Q5_K (176 bytes, 256 elements = 8 sub-blocks of 32)
//   +-------+----------+------------------+---------------+----------------+
//   | f16 d | f16 dmin | uint8 scales[12] | uint8 qh[32]  | uint8 qs[128]  |
//   +-------+----------+------------------+---------------+----------------+
//   scales and the low 4 bits in qs exactly as Q4_K; bit j of qh[l] is the 5th bit (value 16)
//   of element 32j + l. w = d * sc[j] * q - dmin * m[j].
//
// Q6_K (210 bytes, 256 elements = 16 groups of 16)
//   +----------------+---------------+--------------------+-------+
//   | uint8 ql[128]  | uint8 qh[64]  | int8 scales[16]    | f16 d |
//   +----------------+---------------+--------------------+-------+
//   Two halves h of 128 elements; within half h, element r (r < 128) has
//     low 4 bits : ql[64h + r % 64] >> (4 * (r / 64)) & 15
//     high 2 bits: qh[32h + r % 32] >> (2 * (r / 32)) & 3
//   w[e] = d * scales[e / 16] * (q - 32)
//
// F32, F16, BF16: plain little-endian arrays.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace cleave::kernels {

inline constexpr int kQK = 32;     // elements per legacy block (Q8_0, Q4_0, Q4_1)
inline constexpr int kQK_K = 256;  // elements per K-quant super-block

struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[kQK_K / 2];
};
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);

// The weight formats MatMul/GetRows accept: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K.
bool IsSupportedWeightType(DType dtype);

// Unpacks the 6-bit scale and min of sub-block j (0..7) from a Q4_K/Q5_K scales[12] array.
inline void UnpackKScaleMin(const uint8_t* scales, int j, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *m = scales[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

// Scalar reference: dst[0..n) = the n elements of one row at src. n must be a multiple of the
// format's block size (CHECKed); dtype must be supported.
void DequantizeRow(DType dtype, const void* src, float* dst, int64_t n);

// Reference quantizer writing RowBytes(dtype, n) bytes to dst. Legacy formats round to
// nearest; K-quants search a few candidate scales/mins per sub-block for the least squared
// error (not bit-identical to llama.cpp, but the same format).
void QuantizeRow(DType dtype, const float* src, void* dst, int64_t n);

}  // namespace cleave::kernels
