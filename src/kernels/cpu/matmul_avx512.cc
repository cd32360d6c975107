// AVX-512 (F, BW, VL, DQ, VNNI) MatMul kernels (compiled with the AVX-512 flags; see
// src/kernels/CMakeLists.txt). 32 vector registers allow a 4 x 4 row-token tile.
#include "kernels/cpu/matmul_x86_impl.h"

namespace cleave::kernels::cpu {
namespace {

// u8 x s8 dot product of 32 bytes into 8 int32 lanes with VNNI (no intermediate saturation).
struct DotVnni {
  static __m256i Dot(__m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
  }
};

}  // namespace

const MatMulKernels& Avx512MatMulKernels() {
  static const MatMulKernels kernels{QuantizedX86<DotVnni, 4, 4>, FloatX86<4, 4>, 4,
                                     LegacyMatMulAvx512};
  return kernels;
}

}  // namespace cleave::kernels::cpu
