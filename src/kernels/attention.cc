#include "kernels/attention.h"

#include <cstring>

#include "core/fp16.h"
#include "kernels/attention_impl.h"
#include "kernels/quant_formats.h"

namespace cleave::kernels {
namespace {

// The scalar reference: converts each element exactly and accumulates in order.
struct ScalarOps {
  template <DType D>
  static float Dot(const float* q, const uint8_t* row, int64_t n) {
    float dot = 0.0f;
    if constexpr (D == DType::kF32) {
      const auto* x = reinterpret_cast<const float*>(row);
      for (int64_t d = 0; d < n; ++d) dot += q[d] * x[d];
    } else if constexpr (D == DType::kF16) {
      const auto* x = reinterpret_cast<const uint16_t*>(row);
      for (int64_t d = 0; d < n; ++d) dot += q[d] * Fp16ToFp32(x[d]);
    } else {
      const auto* blocks = reinterpret_cast<const BlockQ8_0*>(row);
      for (int64_t b = 0; b < n / kQK; ++b) {
        float block_dot = 0.0f;
        for (int i = 0; i < kQK; ++i) block_dot += q[b * kQK + i] * blocks[b].qs[i];
        dot += Fp16ToFp32(blocks[b].d) * block_dot;
      }
    }
    return dot;
  }

  template <DType D>
  static void Axpy(float w, const uint8_t* row, int64_t n, float* y) {
    if constexpr (D == DType::kF32) {
      const auto* x = reinterpret_cast<const float*>(row);
      for (int64_t d = 0; d < n; ++d) y[d] += w * x[d];
    } else if constexpr (D == DType::kF16) {
      const auto* x = reinterpret_cast<const uint16_t*>(row);
      for (int64_t d = 0; d < n; ++d) y[d] += w * Fp16ToFp32(x[d]);
    } else {
      const auto* blocks = reinterpret_cast<const BlockQ8_0*>(row);
      for (int64_t b = 0; b < n / kQK; ++b) {
        const float wd = w * Fp16ToFp32(blocks[b].d);
        for (int i = 0; i < kQK; ++i) y[b * kQK + i] += wd * blocks[b].qs[i];
      }
    }
  }
};

using AttentionFn = void (*)(const PagedKv&, const PagedKv&, const AttentionHead&);

AttentionFn FunctionFor(cpu::Isa isa) {
  switch (isa) {
    case cpu::Isa::kAvx512:
      return PagedAttentionAvx512;
    case cpu::Isa::kAvx2:
      return PagedAttentionAvx2;
    case cpu::Isa::kScalar:
      break;
  }
  return PagedAttentionScalar;
}

}  // namespace

void PagedAttentionScalar(const PagedKv& k, const PagedKv& v, const AttentionHead& a) {
  AttendImpl<ScalarOps>(k, v, a);
}

Status CheckKvDType(DType dtype, int64_t head_dim) {
  switch (dtype) {
    case DType::kF32:
    case DType::kF16:
      return Status::Ok();
    case DType::kQ8_0:
      if (head_dim % kQK != 0) {
        return InvalidArgument(
            "KV cache dtype q8_0 needs a head_dim that is a multiple of {}; "
            "this model's is {}",
            kQK, head_dim);
      }
      return Status::Ok();
    default:
      return InvalidArgument("KV cache dtype {} is not supported (supported: f16, f32, q8_0)",
                             DTypeName(dtype));
  }
}

int64_t KvHeadBytes(DType dtype, int64_t head_dim) {
  const DTypeInfo& info = DTypeInfoOf(dtype);
  return head_dim / info.block_elems * info.block_bytes;
}

void PagedAttentionWith(cpu::Isa isa, const PagedKv& k, const PagedKv& v, const AttentionHead& a) {
  CLEAVE_CHECK(cpu::IsaSupported(isa), "ISA {} is not supported here", cpu::IsaName(isa));
  FunctionFor(isa)(k, v, a);
}

void PagedAttention(const PagedKv& k, const PagedKv& v, const AttentionHead& a) {
  static const AttentionFn fn = FunctionFor(cpu::ActiveIsa());
  fn(k, v, a);
}

}  // namespace cleave::kernels
