// GGUF reader (versions 2 and 3). The file is untrusted input: every count, length, offset and
// extent is bounds-checked with overflow-safe arithmetic before anything is allocated or
// indexed, and every malformed file yields a Status naming the problem and its byte offset.
//
// File layout (all little-endian):
//
//   +--------------------+  offset 0
//   | magic "GGUF"  u32  |
//   | version       u32  |  2 or 3
//   | tensor_count  u64  |
//   | kv_count      u64  |
//   +--------------------+
//   | kv_count x { key: string, type: u32, value }      string = u64 length + bytes
//   |                                                    array  = u32 elem type + u64 n + elems
//   +--------------------+
//   | tensor_count x { name: string, n_dims: u32, dims: u64[n_dims], type: u32, offset: u64 }
//   +--------------------+  padded to `general.alignment` (default 32)
//   | tensor data        |  each tensor at data_offset + offset, offset aligned
//   +--------------------+
//
// Tensors are zero-copy views into the memory-mapped file.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"
#include "core/status.h"

namespace cleave::gguf {

enum class ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
std::string_view ValueTypeName(ValueType type);

struct Value;
struct Array {
  ValueType elem_type = ValueType::kUint8;
  std::vector<Value> items;
};

// One metadata value. Integers keep their on-disk type so that type checks can be strict.
struct Value {
  ValueType type = ValueType::kUint8;
  std::variant<uint64_t, int64_t, double, bool, std::string, Array> data;

  bool is_integer() const;
  bool is_float() const;

  // Constructors for writers and tests. Integer/float helpers take the on-disk type, which must
  // be an unsigned / signed / float type respectively (checked).
  static Value Uint(ValueType type, uint64_t v);
  static Value Int(ValueType type, int64_t v);
  static Value Float(ValueType type, double v);
  static Value Bool(bool v);
  static Value String(std::string v);
  static Value MakeArray(ValueType elem_type, std::vector<Value> items);
};

// Bytes an element of a fixed-size type takes on disk (0 for string and array).
uint64_t FixedValueSize(ValueType type);
// True if `bytes` is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool IsValidUtf8(std::string_view bytes);

// Safety limits applied while parsing; the defaults accept every real model we know of.
struct Limits {
  uint64_t max_kv_count = 1 << 16;
  uint64_t max_tensor_count = 1 << 20;
  uint64_t max_string_bytes = 1 << 24;       // one string (a chat template can be ~10 KiB)
  uint64_t max_array_items = 1 << 24;        // one array (vocabularies are ~260k)
  uint32_t max_array_depth = 4;              // nested arrays
  uint64_t max_metadata_bytes = 1ull << 30;  // total bytes of decoded metadata
  uint32_t max_dims = 4;
};

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // ne[0] first: the innermost (contiguous) dimension
  uint64_t offset = 0;         // relative to the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // into the mapping (or buffer); valid while the file lives

  int64_t num_elements() const;
};

class GgufFile {
 public:
  // Reads (maps, or copies: see MappedFile) and parses `path`.
  static Result<std::unique_ptr<GgufFile>> Open(
      const std::string& path, const Limits& limits = {},
      MappedFile::Backing backing = MappedFile::Backing::kFileMapping);
  // Parses a buffer the caller keeps alive for the GgufFile's lifetime (tests, fuzzing).
  static Result<std::unique_ptr<GgufFile>> Parse(std::span<const uint8_t> bytes,
                                                 const Limits& limits = {});

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return bytes_.size(); }
  const std::string& path() const { return path_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return metadata_; }
  const Value* Find(std::string_view key) const;

  // Typed getters. NotFound if absent; InvalidArgument naming the key and both types if the
  // stored type does not fit (integers of any width convert when the value fits in range).
  Result<std::string> GetString(std::string_view key) const;
  Result<int64_t> GetInt(std::string_view key) const;
  Result<uint64_t> GetUint(std::string_view key) const;
  Result<double> GetFloat(std::string_view key) const;  // accepts integer values too
  Result<bool> GetBool(std::string_view key) const;
  Result<std::vector<std::string>> GetStringArray(std::string_view key) const;
  Result<std::vector<double>> GetFloatArray(std::string_view key) const;
  Result<std::vector<int64_t>> GetIntArray(std::string_view key) const;
  // Same, with a fallback when the key is absent (a present key of the wrong type is an error).
  Result<int64_t> GetIntOr(std::string_view key, int64_t fallback) const;
  Result<double> GetFloatOr(std::string_view key, double fallback) const;
  Result<bool> GetBoolOr(std::string_view key, bool fallback) const;
  Result<std::string> GetStringOr(std::string_view key, std::string fallback) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* FindTensor(std::string_view name) const;
  // How the bytes are held (a parsed caller's buffer reports kFileMapping).
  MappedFile::Backing backing() const {
    return mapping_ ? mapping_->backing() : MappedFile::Backing::kFileMapping;
  }

 private:
  GgufFile() = default;
  friend class Parser;

  std::string path_;
  std::unique_ptr<MappedFile> mapping_;  // null when parsed from a caller's buffer
  std::span<const uint8_t> bytes_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> metadata_;
  std::unordered_map<std::string, size_t> metadata_index_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace cleave::gguf
