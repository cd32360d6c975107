// AVX2 + FMA MatMul kernels (compiled with -mavx2 -mfma -mf16c; see src/kernels/CMakeLists.txt).
#include "kernels/cpu/matmul_x86_impl.h"

namespace cleave::kernels::cpu {
namespace {

// u8 x s8 dot product of 32 bytes into 8 int32 lanes (lane k sums elements 4k..4k+3).
// maddubs saturates int16 at 2 * 255 * 127, so callers keep u < 128 (4/5/6-bit codes, or the
// |w| of the sign trick for Q8_0).
struct DotAvx2 {
  static __m256i Dot(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
  }
};

}  // namespace

const MatMulKernels& Avx2MatMulKernels() {
  static const MatMulKernels kernels{QuantizedX86<DotAvx2, 2, 4>, FloatX86<2, 4>, 2};
  return kernels;
}

}  // namespace cleave::kernels::cpu
