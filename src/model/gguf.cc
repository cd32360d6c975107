#include "model/gguf.h"

#include <bit>
#include <cstring>
#include <limits>

namespace cleave::gguf {

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes little-endian");

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kMaxValueType = static_cast<uint32_t>(ValueType::kFloat64);
constexpr uint64_t kMaxKeyBytes = 65535;  // the spec's limit on a key
// Lower bounds on the on-disk size of one entry, used to reject counts the file cannot hold
// before anything is reserved: key length + >= 1 key byte + type + >= 1 value byte, and
// name length + n_dims + >= 1 dim + type + offset.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;

bool IsKnownValueType(uint32_t type) {
  return type <= kMaxValueType;
}

bool IsUnsignedType(ValueType t) {
  return t == ValueType::kUint8 || t == ValueType::kUint16 || t == ValueType::kUint32 ||
         t == ValueType::kUint64;
}
bool IsSignedType(ValueType t) {
  return t == ValueType::kInt8 || t == ValueType::kInt16 || t == ValueType::kInt32 ||
         t == ValueType::kInt64;
}
bool IsFloatType(ValueType t) {
  return t == ValueType::kFloat32 || t == ValueType::kFloat64;
}

// Keys and names go into error messages; keep those readable when a name is huge.
std::string Shorten(std::string_view s) {
  constexpr size_t kMax = 80;
  if (s.size() <= kMax) return std::string(s);
  return fmt::format("{}...({} bytes)", s.substr(0, kMax), s.size());
}

std::string TypeDescription(const Value& v) {
  if (v.type != ValueType::kArray) return std::string(ValueTypeName(v.type));
  const auto& arr = std::get<Array>(v.data);
  return fmt::format("array of {}", ValueTypeName(arr.elem_type));
}

bool ToInt64(const Value& v, int64_t* out) {
  if (IsSignedType(v.type)) {
    *out = std::get<int64_t>(v.data);
    return true;
  }
  uint64_t u = std::get<uint64_t>(v.data);
  if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  *out = static_cast<int64_t>(u);
  return true;
}

bool ToUint64(const Value& v, uint64_t* out) {
  if (IsUnsignedType(v.type)) {
    *out = std::get<uint64_t>(v.data);
    return true;
  }
  int64_t s = std::get<int64_t>(v.data);
  if (s < 0) return false;
  *out = static_cast<uint64_t>(s);
  return true;
}

double ToDouble(const Value& v) {
  if (IsFloatType(v.type)) return std::get<double>(v.data);
  if (IsSignedType(v.type)) return static_cast<double>(std::get<int64_t>(v.data));
  return static_cast<double>(std::get<uint64_t>(v.data));
}

}  // namespace

std::string_view ValueTypeName(ValueType type) {
  switch (type) {
    case ValueType::kUint8:
      return "uint8";
    case ValueType::kInt8:
      return "int8";
    case ValueType::kUint16:
      return "uint16";
    case ValueType::kInt16:
      return "int16";
    case ValueType::kUint32:
      return "uint32";
    case ValueType::kInt32:
      return "int32";
    case ValueType::kFloat32:
      return "float32";
    case ValueType::kBool:
      return "bool";
    case ValueType::kString:
      return "string";
    case ValueType::kArray:
      return "array";
    case ValueType::kUint64:
      return "uint64";
    case ValueType::kInt64:
      return "int64";
    case ValueType::kFloat64:
      return "float64";
  }
  return "unknown";
}

uint64_t FixedValueSize(ValueType type) {
  switch (type) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool:
      return 1;
    case ValueType::kUint16:
    case ValueType::kInt16:
      return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32:
      return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64:
      return 8;
    case ValueType::kString:
    case ValueType::kArray:
      return 0;
  }
  return 0;
}

bool IsValidUtf8(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    static constexpr uint32_t kMinForLen[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLen[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

bool Value::is_integer() const {
  return IsUnsignedType(type) || IsSignedType(type);
}
bool Value::is_float() const {
  return IsFloatType(type);
}

Value Value::Uint(ValueType type, uint64_t v) {
  CLEAVE_CHECK(IsUnsignedType(type), "{} is not an unsigned type", ValueTypeName(type));
  return Value{type, v};
}
Value Value::Int(ValueType type, int64_t v) {
  CLEAVE_CHECK(IsSignedType(type), "{} is not a signed type", ValueTypeName(type));
  return Value{type, v};
}
Value Value::Float(ValueType type, double v) {
  CLEAVE_CHECK(IsFloatType(type), "{} is not a float type", ValueTypeName(type));
  return Value{type, v};
}
Value Value::Bool(bool v) {
  return Value{ValueType::kBool, v};
}
Value Value::String(std::string v) {
  return Value{ValueType::kString, std::move(v)};
}
Value Value::MakeArray(ValueType elem_type, std::vector<Value> items) {
  return Value{ValueType::kArray, Array{elem_type, std::move(items)}};
}

int64_t TensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // the reader proved this product fits
  return n;
}

// Decodes one GGUF image into a GgufFile. Single use; `out` is left partially filled on error
// (the caller then discards it).
class Parser {
 public:
  Parser(std::span<const uint8_t> bytes, const Limits& limits, GgufFile& out)
      : bytes_(bytes), limits_(limits), out_(out) {}

  Status Run() {
    CLEAVE_RETURN_IF_ERROR(ReadHeader());
    CLEAVE_RETURN_IF_ERROR(ReadMetadata());
    CLEAVE_RETURN_IF_ERROR(ReadTensorInfos());
    return PlaceTensors();
  }

 private:
  uint64_t remaining() const { return bytes_.size() - pos_; }

  template <typename T>
  Status ReadRaw(T* out, std::string_view what, std::string_view what_suffix = {}) {
    if (remaining() < sizeof(T)) [[unlikely]] {
      return DataLoss("gguf: truncated {}{} at offset {}", what, what_suffix, pos_);
    }
    std::memcpy(out, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::Ok();
  }

  // Counts `bytes` against the decoded-metadata budget before they are allocated.
  Status Charge(uint64_t bytes, uint64_t offset) {
    if (__builtin_add_overflow(metadata_bytes_, bytes, &metadata_bytes_) ||
        metadata_bytes_ > limits_.max_metadata_bytes) {
      return ResourceExhausted("gguf: metadata exceeds the limit of {} decoded bytes at offset {}",
                               limits_.max_metadata_bytes, offset);
    }
    return Status::Ok();
  }

  // Reads a u64 length followed by that many bytes. `what` names the string in messages.
  Status ReadString(std::string* out, std::string_view what, uint64_t max_bytes) {
    const uint64_t start = pos_;
    uint64_t len = 0;
    CLEAVE_RETURN_IF_ERROR(ReadRaw(&len, what, " length"));
    if (len > remaining()) {
      return DataLoss(
          "gguf: {} length {} runs past the end of the file ({} bytes left) at offset {}", what,
          len, remaining(), start);
    }
    if (len > max_bytes) {
      return ResourceExhausted("gguf: {} length {} exceeds the limit of {} at offset {}", what, len,
                               max_bytes, start);
    }
    CLEAVE_RETURN_IF_ERROR(Charge(len, start));
    out->assign(reinterpret_cast<const char*>(bytes_.data() + pos_), len);
    pos_ += len;
    return Status::Ok();
  }

  template <typename Disk, typename Stored>
  Status ReadScalar(ValueType type, Value* out) {
    Disk v{};
    CLEAVE_RETURN_IF_ERROR(ReadRaw(&v, ValueTypeName(type), " value"));
    out->type = type;
    out->data = static_cast<Stored>(v);
    return Status::Ok();
  }

  // `depth` is the number of arrays enclosing this value.
  Status ReadValue(ValueType type, uint32_t depth, Value* out) {
    switch (type) {
      case ValueType::kUint8:
        return ReadScalar<uint8_t, uint64_t>(type, out);
      case ValueType::kInt8:
        return ReadScalar<int8_t, int64_t>(type, out);
      case ValueType::kUint16:
        return ReadScalar<uint16_t, uint64_t>(type, out);
      case ValueType::kInt16:
        return ReadScalar<int16_t, int64_t>(type, out);
      case ValueType::kUint32:
        return ReadScalar<uint32_t, uint64_t>(type, out);
      case ValueType::kInt32:
        return ReadScalar<int32_t, int64_t>(type, out);
      case ValueType::kUint64:
        return ReadScalar<uint64_t, uint64_t>(type, out);
      case ValueType::kInt64:
        return ReadScalar<int64_t, int64_t>(type, out);
      case ValueType::kFloat32:
        return ReadScalar<float, double>(type, out);
      case ValueType::kFloat64:
        return ReadScalar<double, double>(type, out);
      case ValueType::kBool: {
        const uint64_t at = pos_;
        uint8_t b = 0;
        CLEAVE_RETURN_IF_ERROR(ReadRaw(&b, "bool value"));
        if (b > 1) return DataLoss("gguf: bool value {} is not 0 or 1 at offset {}", b, at);
        out->type = type;
        out->data = b == 1;
        return Status::Ok();
      }
      case ValueType::kString: {
        std::string s;
        CLEAVE_RETURN_IF_ERROR(ReadString(&s, "string", limits_.max_string_bytes));
        out->type = type;
        out->data = std::move(s);
        return Status::Ok();
      }
      case ValueType::kArray:
        return ReadArray(depth, out);
    }
    return Internal("gguf: unhandled value type {}", static_cast<uint32_t>(type));
  }

  Status ReadArray(uint32_t depth, Value* out) {
    const uint64_t start = pos_;
    if (depth + 1 > limits_.max_array_depth) {
      return ResourceExhausted("gguf: arrays nested deeper than {} levels at offset {}",
                               limits_.max_array_depth, start);
    }
    uint32_t elem_raw = 0;
    CLEAVE_RETURN_IF_ERROR(ReadRaw(&elem_raw, "array element type"));
    if (!IsKnownValueType(elem_raw)) {
      return DataLoss("gguf: unknown array element type {} at offset {}", elem_raw, start);
    }
    const auto elem_type = static_cast<ValueType>(elem_raw);
    const uint64_t count_at = pos_;
    uint64_t count = 0;
    CLEAVE_RETURN_IF_ERROR(ReadRaw(&count, "array length"));
    uint64_t min_elem_bytes = FixedValueSize(elem_type);
    if (elem_type == ValueType::kString) min_elem_bytes = 8;
    if (elem_type == ValueType::kArray) min_elem_bytes = 4 + 8;
    if (count > remaining() / min_elem_bytes) {
      return DataLoss(
          "gguf: array length {} of {} runs past the end of the file ({} bytes left) at offset {}",
          count, ValueTypeName(elem_type), remaining(), count_at);
    }
    if (count > limits_.max_array_items) {
      return ResourceExhausted("gguf: array length {} exceeds the limit of {} at offset {}", count,
                               limits_.max_array_items, count_at);
    }
    uint64_t item_bytes = 0;
    if (__builtin_mul_overflow(count, uint64_t{sizeof(Value)}, &item_bytes)) {
      return ResourceExhausted("gguf: array length {} is too large at offset {}", count, count_at);
    }
    CLEAVE_RETURN_IF_ERROR(Charge(item_bytes, count_at));
    Array arr;
    arr.elem_type = elem_type;
    arr.items.resize(count);
    for (Value& item : arr.items) {
      CLEAVE_RETURN_IF_ERROR(ReadValue(elem_type, depth + 1, &item));
    }
    out->type = ValueType::kArray;
    out->data = std::move(arr);
    return Status::Ok();
  }

  Status ReadHeader() {
    uint32_t magic = 0;
    CLEAVE_RETURN_IF_ERROR(ReadRaw(&magic, "magic"));
    if (magic != kMagic) {
      return DataLoss("gguf: bad magic 0x{:08x} (not a GGUF file) at offset 0", magic);
    }
    uint32_t version = 0;
    CLEAVE_RETURN_IF_ERROR(ReadRaw(&version, "version"));
    if (version != 2 && version != 3) {
      return Unimplemented("gguf: version {} is not supported (only 2 and 3) at offset 4", version);
    }
    out_.version_ = version;
    CLEAVE_RETURN_IF_ERROR(ReadRaw(&tensor_count_, "tensor count"));
    CLEAVE_RETURN_IF_ERROR(ReadRaw(&kv_count_, "metadata count"));
    // Both counts are checked against what the rest of the file could possibly hold.
    if (kv_count_ > remaining() / kMinKvBytes) {
      return DataLoss(
          "gguf: metadata count {} is more than the {} bytes left can hold at offset 16", kv_count_,
          remaining());
    }
    if (tensor_count_ > remaining() / kMinTensorInfoBytes) {
      return DataLoss("gguf: tensor count {} is more than the {} bytes left can hold at offset 8",
                      tensor_count_, remaining());
    }
    if (kv_count_ > limits_.max_kv_count) {
      return ResourceExhausted("gguf: metadata count {} exceeds the limit of {} at offset 16",
                               kv_count_, limits_.max_kv_count);
    }
    if (tensor_count_ > limits_.max_tensor_count) {
      return ResourceExhausted("gguf: tensor count {} exceeds the limit of {} at offset 8",
                               tensor_count_, limits_.max_tensor_count);
    }
    return Status::Ok();
  }

  Status ReadMetadata() {
    out_.metadata_.reserve(kv_count_);
    for (uint64_t i = 0; i < kv_count_; ++i) {
      const uint64_t kv_at = pos_;
      std::string key;
      CLEAVE_RETURN_IF_ERROR(ReadString(&key, "key", kMaxKeyBytes));
      if (key.empty()) return DataLoss("gguf: empty key at offset {}", kv_at);
      if (!IsValidUtf8(key)) return DataLoss("gguf: key is not valid UTF-8 at offset {}", kv_at);
      if (out_.metadata_index_.count(key) != 0) {
        return DataLoss("gguf: duplicate key '{}' at offset {}", Shorten(key), kv_at);
      }
      const uint64_t type_at = pos_;
      uint32_t type_raw = 0;
      CLEAVE_RETURN_IF_ERROR(ReadRaw(&type_raw, "value type"));
      if (!IsKnownValueType(type_raw)) {
        return DataLoss("gguf: key '{}' has unknown value type {} at offset {}", Shorten(key),
                        type_raw, type_at);
      }
      CLEAVE_RETURN_IF_ERROR(Charge(sizeof(Value) + sizeof(key), kv_at));
      Value value;
      CLEAVE_RETURN_IF_ERROR(ReadValue(static_cast<ValueType>(type_raw), 0, &value));
      if (key == "general.alignment") CLEAVE_RETURN_IF_ERROR(SetAlignment(value, kv_at));
      out_.metadata_index_.emplace(key, out_.metadata_.size());
      out_.metadata_.emplace_back(std::move(key), std::move(value));
    }
    return Status::Ok();
  }

  Status SetAlignment(const Value& value, uint64_t kv_at) {
    if (value.type != ValueType::kUint32) {
      return InvalidArgument(
          "gguf: key 'general.alignment' has type {}, expected uint32 at offset {}",
          TypeDescription(value), kv_at);
    }
    uint64_t a = std::get<uint64_t>(value.data);
    if (a == 0 || (a & (a - 1)) != 0) {
      return DataLoss("gguf: general.alignment {} is not a nonzero power of two at offset {}", a,
                      kv_at);
    }
    out_.alignment_ = a;
    return Status::Ok();
  }

  Status ReadTensorInfos() {
    out_.tensors_.reserve(tensor_count_);
    info_offsets_.reserve(tensor_count_);
    for (uint64_t i = 0; i < tensor_count_; ++i) {
      const uint64_t info_at = pos_;
      TensorInfo t;
      CLEAVE_RETURN_IF_ERROR(ReadString(&t.name, "tensor name", limits_.max_string_bytes));
      if (t.name.empty()) return DataLoss("gguf: empty tensor name at offset {}", info_at);
      if (!IsValidUtf8(t.name)) {
        return DataLoss("gguf: tensor name is not valid UTF-8 at offset {}", info_at);
      }
      const std::string name = Shorten(t.name);
      if (out_.tensor_index_.count(t.name) != 0) {
        return DataLoss("gguf: duplicate tensor name '{}' at offset {}", name, info_at);
      }
      const uint64_t dims_at = pos_;
      uint32_t n_dims = 0;
      CLEAVE_RETURN_IF_ERROR(ReadRaw(&n_dims, "tensor dimension count"));
      if (n_dims == 0 || n_dims > limits_.max_dims) {
        return DataLoss("gguf: tensor '{}' has {} dimensions (1 to {} allowed) at offset {}", name,
                        n_dims, limits_.max_dims, dims_at);
      }
      t.shape.reserve(n_dims);
      int64_t num_elements = 1;
      for (uint32_t d = 0; d < n_dims; ++d) {
        const uint64_t dim_at = pos_;
        uint64_t dim = 0;
        CLEAVE_RETURN_IF_ERROR(ReadRaw(&dim, "tensor dimension"));
        if (dim == 0 || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return DataLoss("gguf: tensor '{}' dimension {} is {} (must be positive) at offset {}",
                          name, d, dim, dim_at);
        }
        if (__builtin_mul_overflow(num_elements, static_cast<int64_t>(dim), &num_elements)) {
          return DataLoss("gguf: tensor '{}' element count overflows at offset {}", name, dim_at);
        }
        t.shape.push_back(static_cast<int64_t>(dim));
      }
      const uint64_t type_at = pos_;
      uint32_t type_raw = 0;
      CLEAVE_RETURN_IF_ERROR(ReadRaw(&type_raw, "tensor type"));
      std::optional<DTypeInfo> info = GetDTypeInfo(type_raw);
      if (!info) {
        return Unimplemented("gguf: tensor '{}' has unknown type {} at offset {}", name, type_raw,
                             type_at);
      }
      t.dtype = info->dtype;
      if (t.shape[0] % info->block_elems != 0) {
        return DataLoss(
            "gguf: tensor '{}' row of {} elements is not a multiple of the {} block size {} at "
            "offset {}",
            name, t.shape[0], info->name, info->block_elems, type_at);
      }
      // num_elements is a multiple of block_elems because ne[0] is.
      if (__builtin_mul_overflow(static_cast<uint64_t>(num_elements) / info->block_elems,
                                 uint64_t{info->block_bytes}, &t.nbytes)) {
        return DataLoss("gguf: tensor '{}' byte size overflows at offset {}", name, type_at);
      }
      const uint64_t offset_at = pos_;
      CLEAVE_RETURN_IF_ERROR(ReadRaw(&t.offset, "tensor data offset"));
      if (t.offset % out_.alignment_ != 0) {
        return DataLoss(
            "gguf: tensor '{}' data offset {} is not a multiple of the alignment {} at offset {}",
            name, t.offset, out_.alignment_, offset_at);
      }
      out_.tensor_index_.emplace(t.name, out_.tensors_.size());
      out_.tensors_.push_back(std::move(t));
      info_offsets_.push_back(info_at);
    }
    return Status::Ok();
  }

  Status PlaceTensors() {
    const uint64_t a = out_.alignment_;
    uint64_t data_offset = 0;
    if (__builtin_add_overflow(pos_, a - 1, &data_offset)) {
      return DataLoss("gguf: data offset overflows at offset {}", pos_);
    }
    data_offset -= data_offset % a;
    out_.data_offset_ = data_offset;
    for (size_t i = 0; i < out_.tensors_.size(); ++i) {
      TensorInfo& t = out_.tensors_[i];
      uint64_t begin = 0;
      uint64_t end = 0;
      if (__builtin_add_overflow(data_offset, t.offset, &begin) ||
          __builtin_add_overflow(begin, t.nbytes, &end) || end > bytes_.size()) {
        return DataLoss(
            "gguf: tensor '{}' data ({} bytes at data offset {}) extends past the end of the file "
            "({} bytes, data section at {}); tensor info at offset {}",
            Shorten(t.name), t.nbytes, t.offset, bytes_.size(), data_offset, info_offsets_[i]);
      }
      t.data = bytes_.data() + begin;
    }
    return Status::Ok();
  }

  std::span<const uint8_t> bytes_;
  const Limits& limits_;
  GgufFile& out_;
  uint64_t pos_ = 0;
  uint64_t tensor_count_ = 0;
  uint64_t kv_count_ = 0;
  uint64_t metadata_bytes_ = 0;
  std::vector<uint64_t> info_offsets_;
};

Result<std::unique_ptr<GgufFile>> GgufFile::Parse(std::span<const uint8_t> bytes,
                                                  const Limits& limits) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->bytes_ = bytes;
  Parser parser(bytes, limits, *file);
  CLEAVE_RETURN_IF_ERROR(parser.Run());
  return file;
}

Result<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path, const Limits& limits,
                                                 MappedFile::Backing backing) {
  CLEAVE_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapping, MappedFile::Open(path, backing));
  std::span<const uint8_t> bytes = mapping->bytes();
  auto parsed = Parse(bytes, limits);
  if (!parsed.ok()) return parsed.status().WithContext(path);
  std::unique_ptr<GgufFile> file = std::move(parsed).value();
  file->path_ = path;
  file->mapping_ = std::move(mapping);
  return file;
}

const Value* GgufFile::Find(std::string_view key) const {
  auto it = metadata_index_.find(std::string(key));
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

const TensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

Status NotFoundKey(std::string_view key) {
  return NotFound("gguf: key '{}' not found", key);
}

Status WrongType(std::string_view key, const Value& v, std::string_view expected) {
  return InvalidArgument("gguf: key '{}' has type {}, expected {}", key, TypeDescription(v),
                         expected);
}

Result<int64_t> AsInt(std::string_view key, const Value& v) {
  if (!v.is_integer()) return WrongType(key, v, "an integer");
  int64_t out = 0;
  if (!ToInt64(v, &out)) {
    return OutOfRange("gguf: key '{}' value {} does not fit in int64", key,
                      std::get<uint64_t>(v.data));
  }
  return out;
}

Result<const Array*> AsArray(std::string_view key, const Value& v, std::string_view expected) {
  if (v.type != ValueType::kArray) return WrongType(key, v, expected);
  return &std::get<Array>(v.data);
}

}  // namespace

Result<std::string> GgufFile::GetString(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return NotFoundKey(key);
  if (v->type != ValueType::kString) return WrongType(key, *v, "string");
  return std::get<std::string>(v->data);
}

Result<int64_t> GgufFile::GetInt(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return NotFoundKey(key);
  return AsInt(key, *v);
}

Result<uint64_t> GgufFile::GetUint(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return NotFoundKey(key);
  if (!v->is_integer()) return WrongType(key, *v, "an integer");
  uint64_t out = 0;
  if (!ToUint64(*v, &out)) {
    return OutOfRange("gguf: key '{}' value {} is negative, expected an unsigned value", key,
                      std::get<int64_t>(v->data));
  }
  return out;
}

Result<double> GgufFile::GetFloat(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return NotFoundKey(key);
  if (!v->is_float() && !v->is_integer()) return WrongType(key, *v, "a number");
  return ToDouble(*v);
}

Result<bool> GgufFile::GetBool(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return NotFoundKey(key);
  if (v->type != ValueType::kBool) return WrongType(key, *v, "bool");
  return std::get<bool>(v->data);
}

Result<std::vector<std::string>> GgufFile::GetStringArray(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return NotFoundKey(key);
  CLEAVE_ASSIGN_OR_RETURN(const Array* arr, AsArray(key, *v, "array of string"));
  if (arr->elem_type != ValueType::kString) return WrongType(key, *v, "array of string");
  std::vector<std::string> out;
  out.reserve(arr->items.size());
  for (const Value& item : arr->items) out.push_back(std::get<std::string>(item.data));
  return out;
}

Result<std::vector<double>> GgufFile::GetFloatArray(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return NotFoundKey(key);
  CLEAVE_ASSIGN_OR_RETURN(const Array* arr, AsArray(key, *v, "array of numbers"));
  if (!IsFloatType(arr->elem_type) && !IsSignedType(arr->elem_type) &&
      !IsUnsignedType(arr->elem_type)) {
    return WrongType(key, *v, "array of numbers");
  }
  std::vector<double> out;
  out.reserve(arr->items.size());
  for (const Value& item : arr->items) out.push_back(ToDouble(item));
  return out;
}

Result<std::vector<int64_t>> GgufFile::GetIntArray(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return NotFoundKey(key);
  CLEAVE_ASSIGN_OR_RETURN(const Array* arr, AsArray(key, *v, "array of integers"));
  if (!IsSignedType(arr->elem_type) && !IsUnsignedType(arr->elem_type)) {
    return WrongType(key, *v, "array of integers");
  }
  std::vector<int64_t> out;
  out.reserve(arr->items.size());
  for (const Value& item : arr->items) {
    int64_t x = 0;
    if (!ToInt64(item, &x)) {
      return OutOfRange("gguf: key '{}' item {} does not fit in int64", key,
                        std::get<uint64_t>(item.data));
    }
    out.push_back(x);
  }
  return out;
}

Result<int64_t> GgufFile::GetIntOr(std::string_view key, int64_t fallback) const {
  if (Find(key) == nullptr) return fallback;
  return GetInt(key);
}

Result<double> GgufFile::GetFloatOr(std::string_view key, double fallback) const {
  if (Find(key) == nullptr) return fallback;
  return GetFloat(key);
}

Result<bool> GgufFile::GetBoolOr(std::string_view key, bool fallback) const {
  if (Find(key) == nullptr) return fallback;
  return GetBool(key);
}

Result<std::string> GgufFile::GetStringOr(std::string_view key, std::string fallback) const {
  if (Find(key) == nullptr) return fallback;
  return GetString(key);
}

}  // namespace cleave::gguf
