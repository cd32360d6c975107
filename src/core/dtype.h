// Element types and quantized block formats, numbered as GGUF/GGML numbers them on disk.
//
// A quantized tensor row of n elements is n / block_elems blocks of block_bytes each. The
// block layouts themselves (and their scalar dequantizers) live in kernels/quant_formats.h;
// this table only knows sizes, which is what a file reader needs to bound-check extents.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace cleave {

enum class DType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

struct DTypeInfo {
  DType dtype;
  std::string_view name;  // as llama.cpp prints it: "q4_K", "f16"
  uint32_t block_elems;   // elements per block (1 for plain types)
  uint32_t block_bytes;   // bytes per block
};

// Info for a known type id, or nullopt for an id cleave has never heard of.
std::optional<DTypeInfo> GetDTypeInfo(uint32_t type_id);
// Info for a known DType (never fails).
const DTypeInfo& DTypeInfoOf(DType dtype);
std::string_view DTypeName(DType dtype);

// Bytes needed for a row of `n` elements, or nullopt if n is not a multiple of the block size.
std::optional<uint64_t> RowBytes(DType dtype, uint64_t n);

}  // namespace cleave
