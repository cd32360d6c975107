// GGUF writer (versions 2 and 3, which share one little-endian layout; see model/gguf.h).
//
// Used by tests to build synthetic models and by `cleave` to generate large synthetic ones, so
// tensor bytes can be given three ways: copied (AddTensor), borrowed (AddTensorView: the caller
// keeps the bytes alive until writing is done) or produced on demand in chunks (AddTensorFill),
// which lets WriteFile stream a multi-GiB model with bounded memory.
//
// Output layout: header, metadata in insertion order, tensor infos in insertion order, padding
// to the alignment, then each tensor's data at an aligned offset. The file ends right after the
// last tensor's data (no trailing padding), or after the tensor infos when there are no tensors.
//
// Not thread-safe. Metadata setters overwrite an existing key in place (keeping its position).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "model/gguf.h"

namespace cleave::gguf {

class GgufWriter {
 public:
  // Fills `dest` with the tensor's bytes [byte_offset, byte_offset + dest.size()). Called in
  // order, chunk by chunk, once per write.
  using FillFn = std::function<Status(uint64_t byte_offset, std::span<uint8_t> dest)>;

  explicit GgufWriter(uint32_t version = 3);

  // 2 or 3 (checked when writing; the two share one layout).
  void SetVersion(uint32_t version) { version_ = version; }
  // Stores `general.alignment` (u32); must be a nonzero power of two (checked when writing).
  // Without it the alignment is 32.
  void SetAlignment(uint32_t alignment) { SetUint32("general.alignment", alignment); }
  // The alignment the file will use, or InvalidArgument if `general.alignment` is unusable.
  Result<uint64_t> alignment() const;

  void SetString(std::string_view key, std::string value);
  void SetUint8(std::string_view key, uint8_t value);
  void SetInt8(std::string_view key, int8_t value);
  void SetUint16(std::string_view key, uint16_t value);
  void SetInt16(std::string_view key, int16_t value);
  void SetUint32(std::string_view key, uint32_t value);
  void SetInt32(std::string_view key, int32_t value);
  void SetUint64(std::string_view key, uint64_t value);
  void SetInt64(std::string_view key, int64_t value);
  void SetFloat32(std::string_view key, float value);
  void SetFloat64(std::string_view key, double value);
  void SetBool(std::string_view key, bool value);
  void SetStringArray(std::string_view key, const std::vector<std::string>& values);
  void SetInt32Array(std::string_view key, const std::vector<int32_t>& values);
  void SetFloat32Array(std::string_view key, const std::vector<float>& values);
  // Any value, including nested arrays. InvalidArgument if an array item's type differs from
  // its array's elem_type, or a key is empty / not UTF-8.
  Status Set(std::string_view key, Value value);

  // Adds a tensor; `shape` is ne[0] first. InvalidArgument on a duplicate or empty name, a
  // non-positive dim, ne[0] not a multiple of the block size, or a byte count that differs from
  // what dtype and shape need.
  Status AddTensor(std::string_view name, DType dtype, std::vector<int64_t> shape,
                   std::span<const uint8_t> bytes);
  // Same without copying: `bytes` must stay alive until the last Serialize/WriteFile.
  Status AddTensorView(std::string_view name, DType dtype, std::vector<int64_t> shape,
                       std::span<const uint8_t> bytes);
  // Same with bytes produced on demand by `fill` while writing.
  Status AddTensorFill(std::string_view name, DType dtype, std::vector<int64_t> shape, FillFn fill);

  // Bytes the tensor of this dtype and shape takes, or InvalidArgument.
  static Result<uint64_t> TensorBytes(DType dtype, std::span<const int64_t> shape);

  class Sink;  // where serialized bytes go (internal)

  // The whole file in memory (small files, tests).
  Result<std::vector<uint8_t>> Serialize() const;
  // Streams the file to `path` (written to a temporary name, then renamed into place).
  Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    DType dtype = DType::kF32;
    std::vector<int64_t> shape;
    uint64_t nbytes = 0;
    std::vector<uint8_t> owned;     // AddTensor
    std::span<const uint8_t> view;  // AddTensorView
    FillFn fill;                    // AddTensorFill
  };

  Status AddTensorImpl(Tensor tensor);
  Status WriteTo(Sink& sink) const;

  uint32_t version_;
  std::vector<std::pair<std::string, Value>> metadata_;
  std::unordered_map<std::string, size_t> metadata_index_;
  std::vector<Tensor> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace cleave::gguf
