// AVX2 + FMA MatMul kernels (compiled with -mavx2 -mfma -mf16c; see src/kernels/CMakeLists.txt).
#include "kernels/cpu/matmul_x86_impl.h"

namespace cleave::kernels::cpu {
namespace {

// int16 dot product of one block (halves w0/x0, w1/x1) into 8 int32 lanes: lane k sums
// elements 2k, 2k+1, 16+2k, 17+2k. pmaddwd cannot overflow: |x| <= 32767.
struct DotAvx2 {
  static __m256i Dot(__m256i w0, __m256i w1, __m256i x0, __m256i x1) {
    return _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1));
  }
};

}  // namespace

const MatMulKernels& Avx2MatMulKernels() {
  static const MatMulKernels kernels{QuantizedX86<DotAvx2, 2, 4>, FloatX86<2, 4>, 2, nullptr,
                                     QuantizeRowX86};
  return kernels;
}

}  // namespace cleave::kernels::cpu
