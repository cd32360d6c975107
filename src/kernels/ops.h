// Element-wise and row-wise operations of a transformer layer, on F32 buffers.
// Mostly scalar and portable (the compiler vectorizes the simple loops); SiluMul, whose exp does
// not vectorize that way, has an AVX-512 variant (activation_avx512.cc). Matmul and attention
// have their own files with per-ISA variants.
#pragma once

#include <cstdint>

#include "kernels/cpu/dispatch.h"

namespace cleave::kernels {

// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i], for one row of n elements.
void RmsNorm(const float* x, const float* weight, float eps, int64_t n, float* out);

// out[i] = silu(gate[i]) * up[i], silu(v) = v / (1 + exp(-v)). out may alias gate or up.
// Uses cpu::ActiveIsa(): AVX-512 with a polynomial exp (relative error ~1e-6 against the
// scalar std::exp version), otherwise scalar.
void SiluMul(const float* gate, const float* up, int64_t n, float* out);
// The same on a given ISA level (must be supported; for tests).
void SiluMulWith(cpu::Isa isa, const float* gate, const float* up, int64_t n, float* out);

// y[i] += x[i]
void Add(const float* x, int64_t n, float* y);

// In-place numerically stable softmax over n values.
void Softmax(float* x, int64_t n);

// out[i] = exp(x[i] - shift) for i < n, and exactly 0 where x[i] - shift < -87 (so masked -inf
// entries and values far below the shift carry no mass); returns the sum of out, accumulated
// in double. With shift = max x, every out[i] is in [0, 1]: unnormalized probabilities for a
// sampler. Results depend on the ISA level (vector exp within ~2 ulp), not on anything else.
double ExpShifted(const float* x, float shift, int64_t n, float* out);
// The same on a given ISA level (must be supported; for tests).
double ExpShiftedWith(cpu::Isa isa, const float* x, float shift, int64_t n, float* out);

// Rotary position embedding, in place on `num_heads` heads of `head_dim` each, at `position`.
// `inv_freq` has head_dim/2 entries (already including any scaling). NeoX layout rotates pairs
// (i, i + head_dim/2); the normal (GPT-J / Llama GGUF) layout rotates pairs (2i, 2i+1).
void Rope(float* x, int64_t num_heads, int64_t head_dim, int64_t position, const float* inv_freq,
          bool neox);

}  // namespace cleave::kernels
