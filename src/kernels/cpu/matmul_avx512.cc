// AVX-512 (F, BW, VL, DQ, VNNI) MatMul kernels (compiled with the AVX-512 flags; see
// src/kernels/CMakeLists.txt). 32 vector registers allow a 4 x 4 row-token tile.
#include "kernels/cpu/matmul_x86_impl.h"

namespace cleave::kernels::cpu {
namespace {

// The int16 block dot product of DotAvx2 with VNNI vpdpwssd (int16 pairs into int32).
struct DotVnni {
  static __m256i Dot(__m256i w0, __m256i w1, __m256i x0, __m256i x1) {
    return _mm256_dpwssd_epi32(_mm256_madd_epi16(w0, x0), w1, x1);
  }
};

}  // namespace

const MatMulKernels& Avx512MatMulKernels() {
  static const MatMulKernels kernels{
      QuantizedX86<DotVnni, 4, 4>, FloatX86<4, 4>, 4,
      LegacyMatMulAvx512,          QuantizeRowX86, LegacyHandlesAvx512};
  return kernels;
}

}  // namespace cleave::kernels::cpu
