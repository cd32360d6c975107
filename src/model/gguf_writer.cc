#include "model/gguf_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fmt/ranges.h>

namespace cleave::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF"
constexpr uint64_t kDefaultAlignment = 32;
constexpr size_t kFillChunkBytes = 4 << 20;

Status CheckItems(const Value& value, uint32_t depth) {
  if (value.type != ValueType::kArray) return Status::Ok();
  if (depth > 64) return InvalidArgument("gguf writer: arrays nested too deeply");
  const Array& arr = std::get<Array>(value.data);
  for (const Value& item : arr.items) {
    if (item.type != arr.elem_type) {
      return InvalidArgument("gguf writer: array of {} holds a {}", ValueTypeName(arr.elem_type),
                             ValueTypeName(item.type));
    }
    CLEAVE_RETURN_IF_ERROR(CheckItems(item, depth + 1));
  }
  return Status::Ok();
}

}  // namespace

// Where bytes go: a growing vector, or a file through a fixed buffer.
class GgufWriter::Sink {
 public:
  virtual ~Sink() = default;
  virtual Status Write(const void* data, size_t n) = 0;

  template <typename T>
  Status Put(T v) {
    return Write(&v, sizeof(T));
  }
  Status PutString(std::string_view s) {
    CLEAVE_RETURN_IF_ERROR(Put<uint64_t>(s.size()));
    return Write(s.data(), s.size());
  }
  Status PutZeros(uint64_t n) {
    static constexpr uint8_t kZeros[256] = {};
    while (n > 0) {
      size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof(kZeros)));
      CLEAVE_RETURN_IF_ERROR(Write(kZeros, k));
      n -= k;
    }
    return Status::Ok();
  }
  uint64_t written() const { return written_; }

 protected:
  uint64_t written_ = 0;
};

GgufWriter::GgufWriter(uint32_t version) : version_(version) {}

Result<uint64_t> GgufWriter::alignment() const {
  auto it = metadata_index_.find("general.alignment");
  if (it == metadata_index_.end()) return kDefaultAlignment;
  const Value& v = metadata_[it->second].second;
  if (v.type != ValueType::kUint32) {
    return InvalidArgument("gguf writer: general.alignment has type {}, expected uint32",
                           ValueTypeName(v.type));
  }
  uint64_t a = std::get<uint64_t>(v.data);
  if (a == 0 || (a & (a - 1)) != 0) {
    return InvalidArgument("gguf writer: general.alignment {} is not a nonzero power of two", a);
  }
  return a;
}

Status GgufWriter::Set(std::string_view key, Value value) {
  if (key.empty() || !IsValidUtf8(key)) {
    return InvalidArgument("gguf writer: key '{}' is empty or not UTF-8", key);
  }
  CLEAVE_RETURN_IF_ERROR(CheckItems(value, 0));
  auto it = metadata_index_.find(std::string(key));
  if (it != metadata_index_.end()) {
    metadata_[it->second].second = std::move(value);
  } else {
    metadata_index_.emplace(std::string(key), metadata_.size());
    metadata_.emplace_back(std::string(key), std::move(value));
  }
  return Status::Ok();
}

// The typed setters build well-formed values, so Set can only fail on the key, which is a bug
// in the calling code.
#define CLEAVE_GGUF_SET(expr)                                  \
  do {                                                         \
    Status set_status = Set(key, expr);                        \
    CLEAVE_CHECK(set_status.ok(), "{}", set_status.message()); \
  } while (0)

void GgufWriter::SetString(std::string_view key, std::string value) {
  CLEAVE_GGUF_SET(Value::String(std::move(value)));
}
void GgufWriter::SetUint8(std::string_view key, uint8_t value) {
  CLEAVE_GGUF_SET(Value::Uint(ValueType::kUint8, value));
}
void GgufWriter::SetInt8(std::string_view key, int8_t value) {
  CLEAVE_GGUF_SET(Value::Int(ValueType::kInt8, value));
}
void GgufWriter::SetUint16(std::string_view key, uint16_t value) {
  CLEAVE_GGUF_SET(Value::Uint(ValueType::kUint16, value));
}
void GgufWriter::SetInt16(std::string_view key, int16_t value) {
  CLEAVE_GGUF_SET(Value::Int(ValueType::kInt16, value));
}
void GgufWriter::SetUint32(std::string_view key, uint32_t value) {
  CLEAVE_GGUF_SET(Value::Uint(ValueType::kUint32, value));
}
void GgufWriter::SetInt32(std::string_view key, int32_t value) {
  CLEAVE_GGUF_SET(Value::Int(ValueType::kInt32, value));
}
void GgufWriter::SetUint64(std::string_view key, uint64_t value) {
  CLEAVE_GGUF_SET(Value::Uint(ValueType::kUint64, value));
}
void GgufWriter::SetInt64(std::string_view key, int64_t value) {
  CLEAVE_GGUF_SET(Value::Int(ValueType::kInt64, value));
}
void GgufWriter::SetFloat32(std::string_view key, float value) {
  CLEAVE_GGUF_SET(Value::Float(ValueType::kFloat32, value));
}
void GgufWriter::SetFloat64(std::string_view key, double value) {
  CLEAVE_GGUF_SET(Value::Float(ValueType::kFloat64, value));
}
void GgufWriter::SetBool(std::string_view key, bool value) {
  CLEAVE_GGUF_SET(Value::Bool(value));
}

void GgufWriter::SetStringArray(std::string_view key, const std::vector<std::string>& values) {
  std::vector<Value> items;
  items.reserve(values.size());
  for (const auto& s : values) items.push_back(Value::String(s));
  CLEAVE_GGUF_SET(Value::MakeArray(ValueType::kString, std::move(items)));
}
void GgufWriter::SetInt32Array(std::string_view key, const std::vector<int32_t>& values) {
  std::vector<Value> items;
  items.reserve(values.size());
  for (int32_t v : values) items.push_back(Value::Int(ValueType::kInt32, v));
  CLEAVE_GGUF_SET(Value::MakeArray(ValueType::kInt32, std::move(items)));
}
void GgufWriter::SetFloat32Array(std::string_view key, const std::vector<float>& values) {
  std::vector<Value> items;
  items.reserve(values.size());
  for (float v : values) items.push_back(Value::Float(ValueType::kFloat32, v));
  CLEAVE_GGUF_SET(Value::MakeArray(ValueType::kFloat32, std::move(items)));
}
#undef CLEAVE_GGUF_SET

Result<uint64_t> GgufWriter::TensorBytes(DType dtype, std::span<const int64_t> shape) {
  if (shape.empty() || shape.size() > 4) {
    return InvalidArgument("gguf writer: a tensor needs 1 to 4 dimensions, got {}", shape.size());
  }
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d <= 0) return InvalidArgument("gguf writer: tensor dimension {} is not positive", d);
    if (__builtin_mul_overflow(n, d, &n)) {
      return InvalidArgument("gguf writer: tensor element count overflows");
    }
  }
  const DTypeInfo& info = DTypeInfoOf(dtype);
  if (shape[0] % info.block_elems != 0) {
    return InvalidArgument("gguf writer: ne[0] = {} is not a multiple of the {} block size {}",
                           shape[0], info.name, info.block_elems);
  }
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(n) / info.block_elems,
                             uint64_t{info.block_bytes}, &bytes)) {
    return InvalidArgument("gguf writer: tensor byte size overflows");
  }
  return bytes;
}

Status GgufWriter::AddTensorImpl(Tensor tensor) {
  if (tensor.name.empty() || !IsValidUtf8(tensor.name)) {
    return InvalidArgument("gguf writer: tensor name '{}' is empty or not UTF-8", tensor.name);
  }
  if (tensor_index_.count(tensor.name) != 0) {
    return InvalidArgument("gguf writer: duplicate tensor '{}'", tensor.name);
  }
  auto nbytes = TensorBytes(tensor.dtype, tensor.shape);
  if (!nbytes.ok()) return nbytes.status().WithContext(tensor.name);
  tensor.nbytes = *nbytes;
  if (!tensor.fill) {
    const uint64_t given = tensor.owned.empty() ? tensor.view.size() : tensor.owned.size();
    if (given != tensor.nbytes) {
      return InvalidArgument("gguf writer: tensor '{}' ({} {}) needs {} bytes, got {}", tensor.name,
                             DTypeName(tensor.dtype), fmt::join(tensor.shape, "x"), tensor.nbytes,
                             given);
    }
  }
  tensor_index_.emplace(tensor.name, tensors_.size());
  tensors_.push_back(std::move(tensor));
  return Status::Ok();
}

Status GgufWriter::AddTensor(std::string_view name, DType dtype, std::vector<int64_t> shape,
                             std::span<const uint8_t> bytes) {
  Tensor t;
  t.name = std::string(name);
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.owned.assign(bytes.begin(), bytes.end());
  return AddTensorImpl(std::move(t));
}

Status GgufWriter::AddTensorView(std::string_view name, DType dtype, std::vector<int64_t> shape,
                                 std::span<const uint8_t> bytes) {
  Tensor t;
  t.name = std::string(name);
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.view = bytes;
  return AddTensorImpl(std::move(t));
}

Status GgufWriter::AddTensorFill(std::string_view name, DType dtype, std::vector<int64_t> shape,
                                 FillFn fill) {
  CLEAVE_CHECK(fill != nullptr);
  Tensor t;
  t.name = std::string(name);
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.fill = std::move(fill);
  return AddTensorImpl(std::move(t));
}

namespace {

Status PutPayload(GgufWriter::Sink& sink, const Value& v) {
  switch (v.type) {
    case ValueType::kUint8:
      return sink.Put<uint8_t>(std::get<uint64_t>(v.data));
    case ValueType::kInt8:
      return sink.Put<int8_t>(std::get<int64_t>(v.data));
    case ValueType::kUint16:
      return sink.Put<uint16_t>(std::get<uint64_t>(v.data));
    case ValueType::kInt16:
      return sink.Put<int16_t>(std::get<int64_t>(v.data));
    case ValueType::kUint32:
      return sink.Put<uint32_t>(std::get<uint64_t>(v.data));
    case ValueType::kInt32:
      return sink.Put<int32_t>(std::get<int64_t>(v.data));
    case ValueType::kUint64:
      return sink.Put<uint64_t>(std::get<uint64_t>(v.data));
    case ValueType::kInt64:
      return sink.Put<int64_t>(std::get<int64_t>(v.data));
    case ValueType::kFloat32:
      return sink.Put<float>(static_cast<float>(std::get<double>(v.data)));
    case ValueType::kFloat64:
      return sink.Put<double>(std::get<double>(v.data));
    case ValueType::kBool:
      return sink.Put<uint8_t>(std::get<bool>(v.data) ? 1 : 0);
    case ValueType::kString:
      return sink.PutString(std::get<std::string>(v.data));
    case ValueType::kArray: {
      const Array& arr = std::get<Array>(v.data);
      CLEAVE_RETURN_IF_ERROR(sink.Put<uint32_t>(static_cast<uint32_t>(arr.elem_type)));
      CLEAVE_RETURN_IF_ERROR(sink.Put<uint64_t>(arr.items.size()));
      for (const Value& item : arr.items) CLEAVE_RETURN_IF_ERROR(PutPayload(sink, item));
      return Status::Ok();
    }
  }
  return InvalidArgument("gguf writer: unknown value type {}", static_cast<uint32_t>(v.type));
}

Status PutValue(GgufWriter::Sink& sink, const Value& v) {
  CLEAVE_RETURN_IF_ERROR(sink.Put<uint32_t>(static_cast<uint32_t>(v.type)));
  return PutPayload(sink, v);
}

class MemorySink final : public GgufWriter::Sink {
 public:
  Status Write(const void* data, size_t n) override {
    const auto* p = static_cast<const uint8_t*>(data);
    bytes.insert(bytes.end(), p, p + n);
    written_ += n;
    return Status::Ok();
  }
  std::vector<uint8_t> bytes;
};

// Buffered writes to a file descriptor; large writes bypass the buffer.
class FileSink final : public GgufWriter::Sink {
 public:
  FileSink(int fd, std::string path) : fd_(fd), path_(std::move(path)), buffer_(1 << 20) {}
  Status Write(const void* data, size_t n) override {
    const auto* p = static_cast<const uint8_t*>(data);
    written_ += n;
    if (used_ + n <= buffer_.size()) {
      std::memcpy(buffer_.data() + used_, p, n);
      used_ += n;
      return Status::Ok();
    }
    CLEAVE_RETURN_IF_ERROR(Flush());
    if (n >= buffer_.size()) return WriteAll(p, n);
    std::memcpy(buffer_.data(), p, n);
    used_ = n;
    return Status::Ok();
  }
  Status Flush() {
    CLEAVE_RETURN_IF_ERROR(WriteAll(buffer_.data(), used_));
    used_ = 0;
    return Status::Ok();
  }

 private:
  Status WriteAll(const uint8_t* p, size_t n) {
    while (n > 0) {
      ssize_t k = ::write(fd_, p, n);
      if (k < 0) {
        if (errno == EINTR) continue;
        return Unavailable("{}: write failed: {}", path_, std::strerror(errno));
      }
      p += k;
      n -= static_cast<size_t>(k);
    }
    return Status::Ok();
  }
  int fd_;
  std::string path_;
  std::vector<uint8_t> buffer_;
  size_t used_ = 0;
};

}  // namespace

Status GgufWriter::WriteTo(Sink& sink) const {
  if (version_ != 2 && version_ != 3) {
    return InvalidArgument("gguf writer: version {} is not supported (2 or 3)", version_);
  }
  CLEAVE_ASSIGN_OR_RETURN(const uint64_t align, alignment());
  CLEAVE_RETURN_IF_ERROR(sink.Put<uint32_t>(kMagic));
  CLEAVE_RETURN_IF_ERROR(sink.Put<uint32_t>(version_));
  CLEAVE_RETURN_IF_ERROR(sink.Put<uint64_t>(tensors_.size()));
  CLEAVE_RETURN_IF_ERROR(sink.Put<uint64_t>(metadata_.size()));
  for (const auto& [key, value] : metadata_) {
    CLEAVE_RETURN_IF_ERROR(sink.PutString(key));
    CLEAVE_RETURN_IF_ERROR(PutValue(sink, value));
  }
  // Data offsets: each tensor starts at the next aligned position after the previous one.
  std::vector<uint64_t> offsets;
  offsets.reserve(tensors_.size());
  uint64_t next = 0;
  for (const Tensor& t : tensors_) {
    offsets.push_back(next);
    next += t.nbytes;
    next = (next + align - 1) / align * align;
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& t = tensors_[i];
    CLEAVE_RETURN_IF_ERROR(sink.PutString(t.name));
    CLEAVE_RETURN_IF_ERROR(sink.Put<uint32_t>(static_cast<uint32_t>(t.shape.size())));
    for (int64_t d : t.shape) CLEAVE_RETURN_IF_ERROR(sink.Put<uint64_t>(static_cast<uint64_t>(d)));
    CLEAVE_RETURN_IF_ERROR(sink.Put<uint32_t>(static_cast<uint32_t>(t.dtype)));
    CLEAVE_RETURN_IF_ERROR(sink.Put<uint64_t>(offsets[i]));
  }
  if (tensors_.empty()) return Status::Ok();
  const uint64_t data_start = (sink.written() + align - 1) / align * align;
  std::vector<uint8_t> chunk;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& t = tensors_[i];
    CLEAVE_RETURN_IF_ERROR(sink.PutZeros(data_start + offsets[i] - sink.written()));
    if (t.fill) {
      chunk.resize(static_cast<size_t>(std::min<uint64_t>(t.nbytes, kFillChunkBytes)));
      for (uint64_t done = 0; done < t.nbytes;) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(t.nbytes - done, chunk.size()));
        std::span<uint8_t> dest(chunk.data(), n);
        Status filled = t.fill(done, dest);
        if (!filled.ok())
          return filled.WithContext(fmt::format("gguf writer: tensor '{}'", t.name));
        CLEAVE_RETURN_IF_ERROR(sink.Write(dest.data(), n));
        done += n;
      }
    } else {
      std::span<const uint8_t> bytes = t.owned.empty() ? t.view : std::span<const uint8_t>(t.owned);
      CLEAVE_RETURN_IF_ERROR(sink.Write(bytes.data(), bytes.size()));
    }
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> GgufWriter::Serialize() const {
  MemorySink sink;
  CLEAVE_RETURN_IF_ERROR(WriteTo(sink));
  return std::move(sink.bytes);
}

Status GgufWriter::WriteFile(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return InvalidArgument("{}: cannot create: {}", tmp, std::strerror(errno));
  FileSink sink(fd, tmp);
  Status status = WriteTo(sink);
  if (status.ok()) status = sink.Flush();
  if (::close(fd) != 0 && status.ok()) {
    status = Unavailable("{}: close failed: {}", tmp, std::strerror(errno));
  }
  if (status.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    status = Unavailable("{}: rename to {} failed: {}", tmp, path, std::strerror(errno));
  }
  if (!status.ok()) ::unlink(tmp.c_str());
  return status;
}

}  // namespace cleave::gguf
