// GGUF reader and writer: round trips through the writer, corrupt files built byte by byte,
// the real default model, and a cross-check against the Python `gguf` package.
#include "model/gguf.h"

#include <gtest/gtest.h>

#include <cctype>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "model/gguf_writer.h"
#include "tests/testing/paths.h"

namespace cleave::gguf {
namespace {

// Whether `text` contains `sub`, with both shown on failure.
::testing::AssertionResult HasText(const std::string& text, std::string_view sub) {
  if (text.find(sub) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' does not contain '" << sub << "'";
}

constexpr uint32_t kTypeString = 8;
constexpr uint32_t kTypeArray = 9;

// Builds GGUF bytes by hand, independently of GgufWriter, so that corrupt files can be made.
struct Raw {
  std::vector<uint8_t> b;

  uint64_t pos() const { return b.size(); }
  template <typename T>
  Raw& Put(T v) {
    uint8_t tmp[sizeof(T)];
    std::memcpy(tmp, &v, sizeof(T));
    b.insert(b.end(), tmp, tmp + sizeof(T));
    return *this;
  }
  Raw& U8(uint8_t v) { return Put(v); }
  Raw& U32(uint32_t v) { return Put(v); }
  Raw& U64(uint64_t v) { return Put(v); }
  Raw& Str(std::string_view s) {
    U64(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Raw& Header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    return U32(0x46554747).U32(version).U64(tensors).U64(kvs);
  }
  Raw& KvU32(std::string_view key, uint32_t v) { return Str(key).U32(4).U32(v); }
  Raw& KvStr(std::string_view key, std::string_view v) { return Str(key).U32(kTypeString).Str(v); }
  Raw& Info(std::string_view name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
    Str(name).U32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) U64(d);
    return U32(type).U64(offset);
  }
  Raw& PadTo(uint64_t align) {
    while (b.size() % align != 0) b.push_back(0);
    return *this;
  }
  Raw& Zeros(size_t n) {
    b.insert(b.end(), n, 0);
    return *this;
  }
};

Result<std::unique_ptr<GgufFile>> ParseBytes(const std::vector<uint8_t>& bytes,
                                             const Limits& limits = {}) {
  return GgufFile::Parse(std::span<const uint8_t>(bytes.data(), bytes.size()), limits);
}

// Asserts that parsing fails with `code` and a message containing `substr` and "offset".
void ExpectError(const std::vector<uint8_t>& bytes, StatusCode code, std::string_view substr,
                 const Limits& limits = {}) {
  auto r = ParseBytes(bytes, limits);
  ASSERT_FALSE(r.ok()) << "expected an error containing: " << substr;
  EXPECT_EQ(r.status().code(), code) << r.status().ToString();
  EXPECT_TRUE(HasText(r.status().message(), substr));
  EXPECT_TRUE(HasText(r.status().message(), "offset"));
}

std::vector<uint8_t> Iota(size_t n, uint8_t start = 0) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(start + i * 7);
  return v;
}

// A small valid file: a few keys of different types and two tensors, the last ending at EOF.
std::vector<uint8_t> SmallFile(uint32_t version = 3) {
  GgufWriter w(version);
  w.SetString("general.architecture", "llama");
  w.SetUint32("llama.block_count", 2);
  w.SetFloat32("llama.rope.freq_base", 10000.0f);
  w.SetBool("tokenizer.ggml.add_bos_token", true);
  w.SetStringArray("tokenizer.ggml.tokens", {"a", "bc", "\xc3\xa9"});
  w.SetInt32Array("tokenizer.ggml.token_type", {1, -2, 3});
  EXPECT_TRUE(w.AddTensor("a.weight", DType::kF32, {4, 2}, Iota(32)).ok());
  EXPECT_TRUE(w.AddTensor("b.weight", DType::kQ8_0, {32, 1}, Iota(34, 5)).ok());
  auto bytes = w.Serialize();
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  return *bytes;
}

TEST(GgufRoundTrip, EveryValueType) {
  GgufWriter w;
  w.SetUint8("u8", 200);
  w.SetInt8("i8", -100);
  w.SetUint16("u16", 60000);
  w.SetInt16("i16", -30000);
  w.SetUint32("u32", 4000000000u);
  w.SetInt32("i32", -2000000000);
  w.SetUint64("u64", 18000000000000000000ull);
  w.SetInt64("i64", -9000000000000000000ll);
  w.SetFloat32("f32", 1.5f);
  w.SetFloat64("f64", -2.25e300);
  w.SetBool("t", true);
  w.SetBool("f", false);
  w.SetString("s", "h\xc3\xa9llo");
  w.SetString("empty", "");
  w.SetStringArray("sa", {"x", "", "yz"});
  w.SetInt32Array("ia", {1, -2, 2147483647});
  w.SetFloat32Array("fa", {0.5f, -1.0f});
  ASSERT_TRUE(
      w.Set("u16a", Value::MakeArray(ValueType::kUint16, {Value::Uint(ValueType::kUint16, 7),
                                                          Value::Uint(ValueType::kUint16, 65535)}))
          .ok());
  ASSERT_TRUE(
      w.Set("ba", Value::MakeArray(ValueType::kBool, {Value::Bool(true), Value::Bool(false)}))
          .ok());
  ASSERT_TRUE(w.Set("empty_arr", Value::MakeArray(ValueType::kInt64, {})).ok());
  auto bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok());
  auto r = ParseBytes(*bytes);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const GgufFile& f = **r;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.metadata().size(), 20u);
  EXPECT_EQ(f.metadata()[0].first, "u8");  // file order
  EXPECT_EQ(f.metadata()[19].first, "empty_arr");

  EXPECT_EQ(f.Find("u8")->type, ValueType::kUint8);
  EXPECT_EQ(*f.GetUint("u8"), 200u);
  EXPECT_EQ(f.Find("i8")->type, ValueType::kInt8);
  EXPECT_EQ(*f.GetInt("i8"), -100);
  EXPECT_EQ(*f.GetInt("u16"), 60000);
  EXPECT_EQ(*f.GetInt("i16"), -30000);
  EXPECT_EQ(*f.GetUint("u32"), 4000000000u);
  EXPECT_EQ(*f.GetInt("i32"), -2000000000);
  EXPECT_EQ(*f.GetUint("u64"), 18000000000000000000ull);
  EXPECT_EQ(*f.GetInt("i64"), -9000000000000000000ll);
  EXPECT_EQ(f.Find("f32")->type, ValueType::kFloat32);
  EXPECT_EQ(*f.GetFloat("f32"), 1.5);
  EXPECT_EQ(*f.GetFloat("f64"), -2.25e300);
  EXPECT_EQ(*f.GetFloat("u32"), 4000000000.0);  // integers read as floats
  EXPECT_TRUE(*f.GetBool("t"));
  EXPECT_FALSE(*f.GetBool("f"));
  EXPECT_EQ(*f.GetString("s"), "h\xc3\xa9llo");
  EXPECT_EQ(*f.GetString("empty"), "");
  EXPECT_EQ(*f.GetStringArray("sa"), (std::vector<std::string>{"x", "", "yz"}));
  EXPECT_EQ(*f.GetIntArray("ia"), (std::vector<int64_t>{1, -2, 2147483647}));
  EXPECT_EQ(*f.GetFloatArray("fa"), (std::vector<double>{0.5, -1.0}));
  EXPECT_EQ(*f.GetFloatArray("ia"), (std::vector<double>{1, -2, 2147483647}));
  EXPECT_EQ(*f.GetIntArray("u16a"), (std::vector<int64_t>{7, 65535}));
  const Array& ba = std::get<Array>(f.Find("ba")->data);
  EXPECT_EQ(ba.elem_type, ValueType::kBool);
  ASSERT_EQ(ba.items.size(), 2u);
  EXPECT_TRUE(std::get<bool>(ba.items[0].data));
  EXPECT_FALSE(std::get<bool>(ba.items[1].data));
  EXPECT_TRUE(f.GetIntArray("empty_arr")->empty());
  EXPECT_TRUE(f.tensors().empty());
}

TEST(GgufRoundTrip, NestedArrays) {
  GgufWriter w;
  std::vector<Value> rows;
  for (int i = 0; i < 3; ++i) {
    std::vector<Value> row;
    for (int j = 0; j <= i; ++j) row.push_back(Value::Int(ValueType::kInt32, i * 10 + j));
    rows.push_back(Value::MakeArray(ValueType::kInt32, std::move(row)));
  }
  ASSERT_TRUE(w.Set("nested", Value::MakeArray(ValueType::kArray, std::move(rows))).ok());
  std::vector<Value> words = {Value::MakeArray(ValueType::kString, {Value::String("a")}),
                              Value::MakeArray(ValueType::kString, {})};
  ASSERT_TRUE(w.Set("words", Value::MakeArray(ValueType::kArray, std::move(words))).ok());
  auto r = ParseBytes(*w.Serialize());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Array& nested = std::get<Array>((*r)->Find("nested")->data);
  EXPECT_EQ(nested.elem_type, ValueType::kArray);
  ASSERT_EQ(nested.items.size(), 3u);
  const Array& row2 = std::get<Array>(nested.items[2].data);
  EXPECT_EQ(row2.elem_type, ValueType::kInt32);
  ASSERT_EQ(row2.items.size(), 3u);
  EXPECT_EQ(std::get<int64_t>(row2.items[2].data), 22);
  const Array& words_back = std::get<Array>((*r)->Find("words")->data);
  EXPECT_EQ(std::get<std::string>(std::get<Array>(words_back.items[0].data).items[0].data), "a");
  EXPECT_TRUE(std::get<Array>(words_back.items[1].data).items.empty());
  // A typed getter does not flatten nested arrays.
  auto ints = (*r)->GetIntArray("nested");
  EXPECT_EQ(ints.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(HasText(ints.status().message(), "array of array"));
}

Value NestedDepth(int depth) {
  Value v = Value::MakeArray(ValueType::kUint8, {Value::Uint(ValueType::kUint8, 1)});
  for (int i = 1; i < depth; ++i) v = Value::MakeArray(ValueType::kArray, {v});
  return v;
}

TEST(GgufRoundTrip, ArrayDepthLimit) {
  GgufWriter ok_writer;
  ASSERT_TRUE(ok_writer.Set("deep", NestedDepth(4)).ok());
  EXPECT_TRUE(ParseBytes(*ok_writer.Serialize()).ok());
  GgufWriter deep_writer;
  ASSERT_TRUE(deep_writer.Set("deep", NestedDepth(5)).ok());
  ExpectError(*deep_writer.Serialize(), StatusCode::kResourceExhausted,
              "arrays nested deeper than 4");
  Limits limits;
  limits.max_array_depth = 1;
  ExpectError(*ok_writer.Serialize(), StatusCode::kResourceExhausted, "nested deeper than 1",
              limits);
}

TEST(GgufRoundTrip, AlignmentsAndVersions) {
  for (uint32_t version : {2u, 3u}) {
    for (uint32_t align : {1u, 8u, 32u, 64u, 4096u}) {
      SCOPED_TRACE(fmt::format("v{} align {}", version, align));
      GgufWriter w(version);
      if (align != 32) w.SetAlignment(align);
      w.SetString("general.name", "t");
      auto a = Iota(4 * 3 * 4);
      auto b = Iota(2 * 64, 3);  // f16 [64, 1]
      auto c = Iota(36 * 2, 9);  // q8_1 [32, 2]
      ASSERT_TRUE(w.AddTensor("a", DType::kF32, {4, 3}, a).ok());
      ASSERT_TRUE(w.AddTensorView("b", DType::kF16, {64, 1}, b).ok());
      ASSERT_TRUE(
          w.AddTensorFill("c", DType::kQ8_1, {32, 2}, [&](uint64_t off, std::span<uint8_t> dest) {
             std::memcpy(dest.data(), c.data() + off, dest.size());
             return Status::Ok();
           }).ok());
      auto bytes = w.Serialize();
      ASSERT_TRUE(bytes.ok());
      auto r = ParseBytes(*bytes);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      const GgufFile& f = **r;
      EXPECT_EQ(f.version(), version);
      EXPECT_EQ(f.alignment(), align);
      EXPECT_EQ(f.data_offset() % align, 0u);
      ASSERT_EQ(f.tensors().size(), 3u);
      const std::vector<std::vector<uint8_t>*> want = {&a, &b, &c};
      for (size_t i = 0; i < 3; ++i) {
        const TensorInfo& t = f.tensors()[i];
        EXPECT_EQ((t.data - bytes->data()) % align, 0u);
        EXPECT_EQ(t.data, bytes->data() + f.data_offset() + t.offset);  // zero copy
        ASSERT_EQ(t.nbytes, want[i]->size());
        EXPECT_EQ(std::memcmp(t.data, want[i]->data(), t.nbytes), 0);
      }
      EXPECT_EQ(f.FindTensor("c")->dtype, DType::kQ8_1);
      EXPECT_EQ(f.FindTensor("c")->shape, (std::vector<int64_t>{32, 2}));
      EXPECT_EQ(f.FindTensor("c")->num_elements(), 64);
      EXPECT_EQ(f.FindTensor("missing"), nullptr);
      // The last tensor ends exactly at the end of the file.
      EXPECT_EQ(f.tensors()[2].data + f.tensors()[2].nbytes, bytes->data() + bytes->size());
    }
  }
}

TEST(GgufRoundTrip, WriteFileStreamsTheSameBytesAndOpenMaps) {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  std::vector<uint8_t> big(6u << 20);  // larger than the writer's chunk and buffer sizes
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 31 + (i >> 12));
  ASSERT_TRUE(w.AddTensorView("big", DType::kI8, {static_cast<int64_t>(big.size())}, big).ok());
  ASSERT_TRUE(
      w.AddTensorFill("gen", DType::kF32, {1 << 20, 2}, [](uint64_t off, std::span<uint8_t> dest) {
         for (size_t i = 0; i < dest.size(); ++i) {
           dest[i] = static_cast<uint8_t>((off + i) % 251);
         }
         return Status::Ok();
       }).ok());
  const std::string path = testing::TempDir() + "/stream.gguf";
  ASSERT_TRUE(w.WriteFile(path).ok());
  auto mem = w.Serialize();
  ASSERT_TRUE(mem.ok());
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->path(), path);
  ASSERT_EQ((*f)->file_size(), mem->size());
  const uint8_t* base = (*f)->tensors()[0].data - (*f)->data_offset() - (*f)->tensors()[0].offset;
  EXPECT_EQ(std::memcmp(base, mem->data(), mem->size()), 0);
  const TensorInfo* gen = (*f)->FindTensor("gen");
  ASSERT_NE(gen, nullptr);
  EXPECT_EQ(gen->nbytes, 8u << 20);
  EXPECT_EQ(gen->data[5u << 20], (5u << 20) % 251);
}

TEST(GgufWriterTest, RejectsBadTensorsAndValues) {
  GgufWriter w;
  auto bad_bytes = w.AddTensor("x", DType::kF32, {4}, Iota(15));
  EXPECT_EQ(bad_bytes.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(HasText(bad_bytes.message(), "needs 16 bytes, got 15"));
  EXPECT_TRUE(w.AddTensor("x", DType::kF32, {4}, Iota(16)).ok());
  EXPECT_TRUE(HasText(w.AddTensor("x", DType::kF32, {4}, Iota(16)).message(), "duplicate"));
  EXPECT_TRUE(HasText(w.AddTensor("y", DType::kQ4_0, {16}, Iota(9)).message(), "block size"));
  EXPECT_TRUE(HasText(w.AddTensor("z", DType::kF32, {0}, {}).message(), "not positive"));
  auto mixed = w.Set("m", Value::MakeArray(ValueType::kInt32, {Value::Uint(ValueType::kUint8, 1)}));
  EXPECT_EQ(mixed.code(), StatusCode::kInvalidArgument);
  w.SetAlignment(24);
  EXPECT_TRUE(HasText(w.Serialize().status().message(), "power of two"));
  w.SetAlignment(16);
  w.SetVersion(1);
  EXPECT_EQ(w.Serialize().status().code(), StatusCode::kInvalidArgument);
  w.SetVersion(2);
  EXPECT_TRUE(w.Serialize().ok());
  // Setting a key again replaces it in place.
  w.SetString("k", "one");
  w.SetString("k", "two");
  auto r = ParseBytes(*w.Serialize());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->metadata().size(), 2u);
  EXPECT_EQ(*(*r)->GetString("k"), "two");
}

TEST(GgufCorrupt, TruncatedAtEveryByte) {
  for (uint32_t version : {2u, 3u}) {
    const std::vector<uint8_t> full = SmallFile(version);
    ASSERT_TRUE(ParseBytes(full).ok());
    for (size_t n = 0; n < full.size(); ++n) {
      // An exact-size copy, so that a sanitizer build catches any read past the end.
      std::vector<uint8_t> prefix(full.begin(), full.begin() + n);
      auto r = ParseBytes(prefix);
      ASSERT_FALSE(r.ok()) << "prefix of " << n << " bytes parsed";
      EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << n << ": " << r.status().ToString();
      EXPECT_TRUE(HasText(r.status().message(), "offset")) << n;
    }
  }
}

TEST(GgufCorrupt, TruncationMessagesNameTheField) {
  std::vector<uint8_t> full = SmallFile();
  auto cut = [&](size_t n) { return std::vector<uint8_t>(full.begin(), full.begin() + n); };
  ExpectError(cut(2), StatusCode::kDataLoss, "truncated magic at offset 0");
  ExpectError(cut(6), StatusCode::kDataLoss, "truncated version at offset 4");
  ExpectError(cut(12), StatusCode::kDataLoss, "truncated tensor count at offset 8");
  ExpectError(cut(20), StatusCode::kDataLoss, "truncated metadata count at offset 16");
  ExpectError(cut(full.size() - 1), StatusCode::kDataLoss, "extends past the end of the file");
  // Early truncations are caught by the count check; these get past it.
  Raw value;
  value.Header(0, 1).Str("k").U32(4).U8(1);
  ExpectError(value.b, StatusCode::kDataLoss, "truncated uint32 value at offset 37");
  Raw length;
  length.Header(0, 1).Str("key").U32(kTypeString).U8(1);
  ExpectError(length.b, StatusCode::kDataLoss, "truncated string length at offset 39");
  Raw array;
  array.Header(0, 1).Str("k").U32(kTypeArray).U8(1);
  ExpectError(array.b, StatusCode::kDataLoss, "truncated array element type at offset 37");
}

TEST(GgufCorrupt, BadMagicAndVersion) {
  Raw bad_magic;
  bad_magic.U32(0x12345678).U32(3).U64(0).U64(0);
  ExpectError(bad_magic.b, StatusCode::kDataLoss, "bad magic 0x12345678");
  Raw v1;
  v1.Header(0, 0, 1);
  ExpectError(v1.b, StatusCode::kUnimplemented, "version 1 is not supported");
  Raw v4;
  v4.Header(0, 0, 4);
  ExpectError(v4.b, StatusCode::kUnimplemented, "version 4 is not supported");
  Raw v2;
  v2.Header(0, 0, 2);
  EXPECT_TRUE(ParseBytes(v2.b).ok());
}

TEST(GgufCorrupt, HugeCounts) {
  Raw kvs;
  kvs.Header(0, 1ull << 63).KvU32("a", 1);
  ExpectError(kvs.b, StatusCode::kDataLoss, "metadata count 9223372036854775808");
  Raw tensors;
  tensors.Header(1ull << 63, 1).KvU32("a", 1);
  ExpectError(tensors.b, StatusCode::kDataLoss, "tensor count 9223372036854775808");
  // Counts the file could hold but that exceed the limits.
  Raw two;
  two.Header(0, 2).KvU32("a", 1).KvU32("b", 2);
  Limits limits;
  limits.max_kv_count = 1;
  ExpectError(two.b, StatusCode::kResourceExhausted, "metadata count 2 exceeds the limit of 1",
              limits);
  limits = {};
  limits.max_tensor_count = 0;
  Raw one_tensor;
  one_tensor.Header(1, 0).Info("t", {1}, 0, 0).PadTo(32).Zeros(4);
  ASSERT_TRUE(ParseBytes(one_tensor.b).ok());
  ExpectError(one_tensor.b, StatusCode::kResourceExhausted, "tensor count 1 exceeds", limits);
}

TEST(GgufCorrupt, HugeStringAndArrayLengths) {
  Raw key;
  key.Header(0, 1).U64(1ull << 63).Zeros(16);
  ExpectError(key.b, StatusCode::kDataLoss, "key length 9223372036854775808 runs past the end");
  Raw value;
  value.Header(0, 1).Str("k").U32(kTypeString);
  const uint64_t at = value.pos();
  value.U64(1ull << 63).Zeros(16);
  ExpectError(value.b, StatusCode::kDataLoss,
              fmt::format("string length 9223372036854775808 runs past the end of the file (16 "
                          "bytes left) at offset {}",
                          at));
  Raw array;
  array.Header(0, 1).Str("k").U32(kTypeArray).U32(4);
  const uint64_t count_at = array.pos();
  array.U64(1ull << 62).Zeros(64);
  ExpectError(array.b, StatusCode::kDataLoss,
              fmt::format("array length 4611686018427387904 of uint32 runs past the end of the "
                          "file (64 bytes left) at offset {}",
                          count_at));
  Raw str_array;  // each string needs at least 8 bytes
  str_array.Header(0, 1).Str("k").U32(kTypeArray).U32(kTypeString).U64(9).Zeros(64);
  ExpectError(str_array.b, StatusCode::kDataLoss, "array length 9 of string runs past the end");
  Raw tensor_name;
  tensor_name.Header(1, 0).U64(~0ull).Zeros(40);
  ExpectError(tensor_name.b, StatusCode::kDataLoss, "tensor name length 18446744073709551615");

  // Within the file but above the limits.
  Raw long_string;
  long_string.Header(0, 1).KvStr("k", std::string(100, 'x'));
  Limits limits;
  limits.max_string_bytes = 99;
  ExpectError(long_string.b, StatusCode::kResourceExhausted,
              "string length 100 exceeds the limit of 99", limits);
  Raw long_array;
  long_array.Header(0, 1).Str("k").U32(kTypeArray).U32(0).U64(100).Zeros(100);
  ASSERT_TRUE(ParseBytes(long_array.b).ok());
  limits = {};
  limits.max_array_items = 10;
  ExpectError(long_array.b, StatusCode::kResourceExhausted, "array length 100 exceeds the limit",
              limits);
  limits = {};
  limits.max_metadata_bytes = 1000;
  ExpectError(long_array.b, StatusCode::kResourceExhausted, "metadata exceeds the limit of 1000",
              limits);
}

TEST(GgufCorrupt, BadValues) {
  Raw boolean;
  boolean.Header(0, 1).Str("b").U32(7);
  const uint64_t at = boolean.pos();
  boolean.U8(2);
  ExpectError(boolean.b, StatusCode::kDataLoss,
              fmt::format("bool value 2 is not 0 or 1 at offset {}", at));
  Raw type;
  type.Header(0, 1).Str("k").U32(13).U32(0);
  ExpectError(type.b, StatusCode::kDataLoss, "key 'k' has unknown value type 13 at offset 33");
  Raw elem;
  elem.Header(0, 1).Str("k").U32(kTypeArray).U32(99).U64(0);
  ExpectError(elem.b, StatusCode::kDataLoss, "unknown array element type 99");
  Raw utf8;
  utf8.Header(0, 1).Str("k\xff").U32(4).U32(0);
  ExpectError(utf8.b, StatusCode::kDataLoss, "key is not valid UTF-8 at offset 24");
  Raw empty_key;
  empty_key.Header(0, 1).Str("").U32(4).U32(0);
  ExpectError(empty_key.b, StatusCode::kDataLoss, "empty key at offset 24");
  Raw dup;
  dup.Header(0, 2).KvU32("a", 1);
  const uint64_t dup_at = dup.pos();
  dup.KvU32("a", 2);
  ExpectError(dup.b, StatusCode::kDataLoss, fmt::format("duplicate key 'a' at offset {}", dup_at));
}

TEST(GgufCorrupt, BadAlignment) {
  for (uint32_t a : {0u, 3u, 48u}) {
    Raw r;
    r.Header(0, 1).KvU32("general.alignment", a);
    ExpectError(r.b, StatusCode::kDataLoss,
                fmt::format("general.alignment {} is not a nonzero power of two at offset 24", a));
  }
  Raw wrong_type;
  wrong_type.Header(0, 1).Str("general.alignment").U32(10).U64(32);
  ExpectError(wrong_type.b, StatusCode::kInvalidArgument,
              "'general.alignment' has type uint64, expected uint32 at offset 24");
}

TEST(GgufCorrupt, BadTensorInfos) {
  auto one = [](std::vector<uint64_t> dims, uint32_t type, uint64_t offset, size_t data_bytes) {
    Raw r;
    r.Header(1, 0).Info("t", std::move(dims), type, offset).PadTo(32).Zeros(data_bytes);
    return r.b;
  };
  ASSERT_TRUE(ParseBytes(one({4}, 0, 0, 16)).ok());
  ASSERT_TRUE(ParseBytes(one({4}, 0, 32, 48)).ok());
  // Header 24 bytes, then name (8 + 1), so n_dims is at 33, the first dim at 37.
  ExpectError(one({}, 0, 0, 16), StatusCode::kDataLoss,
              "tensor 't' has 0 dimensions (1 to 4 allowed) at offset 33");
  ExpectError(one({1, 1, 1, 1, 1}, 0, 0, 16), StatusCode::kDataLoss, "has 5 dimensions");
  ExpectError(one({4, 0}, 0, 0, 16), StatusCode::kDataLoss,
              "tensor 't' dimension 1 is 0 (must be positive) at offset 45");
  ExpectError(one({1ull << 63}, 0, 0, 16), StatusCode::kDataLoss, "(must be positive)");
  ExpectError(one({1ull << 32, 1ull << 32}, 0, 0, 16), StatusCode::kDataLoss,
              "tensor 't' element count overflows at offset 45");
  // Fits in int64 elements, but not in bytes.
  ExpectError(one({1ull << 31, 1ull << 31}, 0, 0, 16), StatusCode::kDataLoss,
              "byte size overflows");
  ExpectError(one({4}, 99, 0, 16), StatusCode::kUnimplemented,
              "tensor 't' has unknown type 99 at offset 45");
  ExpectError(one({16}, static_cast<uint32_t>(DType::kQ8_0), 0, 64), StatusCode::kDataLoss,
              "row of 16 elements is not a multiple of the q8_0 block size 32");
  ExpectError(one({4}, 0, 16, 64), StatusCode::kDataLoss,
              "tensor 't' data offset 16 is not a multiple of the alignment 32 at offset 49");
  ExpectError(one({4}, 0, 0, 15), StatusCode::kDataLoss,
              "tensor 't' data (16 bytes at data offset 0) extends past the end of the file");
  ExpectError(one({4}, 0, ~0ull - 31, 16), StatusCode::kDataLoss, "extends past the end");
  ExpectError(one({1ull << 40}, 0, 0, 16), StatusCode::kDataLoss, "tensor info at offset 24");

  Raw dup;
  dup.Header(2, 0).Info("t", {4}, 0, 0);
  const uint64_t dup_at = dup.pos();
  dup.Info("t", {4}, 0, 32).PadTo(32).Zeros(48);
  ExpectError(dup.b, StatusCode::kDataLoss,
              fmt::format("duplicate tensor name 't' at offset {}", dup_at));
  Raw custom_align;  // the alignment applies to tensor offsets and the data section
  custom_align.Header(1, 1).KvU32("general.alignment", 8).Info("t", {2}, 0, 8).PadTo(8).Zeros(16);
  auto ok = ParseBytes(custom_align.b);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ((*ok)->alignment(), 8u);
  EXPECT_EQ((*ok)->data_offset() % 8, 0u);
}

TEST(GgufGetters, WrongTypesAndRanges) {
  GgufWriter w;
  w.SetUint32("u32", 7);
  w.SetInt32("neg", -1);
  w.SetUint64("big", ~0ull);
  w.SetString("s", "x");
  w.SetFloat32("f", 0.25f);
  w.SetStringArray("sa", {"a"});
  w.SetInt32Array("ia", {1});
  auto r = ParseBytes(*w.Serialize());
  ASSERT_TRUE(r.ok());
  const GgufFile& f = **r;
  auto s = f.GetString("u32");
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.status().message(), "gguf: key 'u32' has type uint32, expected string");
  auto i = f.GetInt("s");
  EXPECT_EQ(i.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(i.status().message(), "gguf: key 's' has type string, expected an integer");
  EXPECT_EQ(f.GetInt("f").status().code(), StatusCode::kInvalidArgument);  // no float -> int
  EXPECT_EQ(f.GetBool("u32").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetFloat("s").status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(HasText(f.GetStringArray("ia").status().message(),
                      "has type array of int32, expected array of string"));
  EXPECT_TRUE(HasText(f.GetIntArray("sa").status().message(), "array of string"));
  EXPECT_EQ(f.GetFloatArray("s").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetUint("neg").status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(f.GetInt("big").status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(*f.GetUint("big"), ~0ull);
  EXPECT_EQ(*f.GetInt("neg"), -1);
  EXPECT_EQ(f.GetInt("missing").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(HasText(f.GetInt("missing").status().message(), "'missing'"));
  EXPECT_EQ(*f.GetIntOr("missing", 5), 5);
  EXPECT_EQ(*f.GetIntOr("u32", 5), 7);
  EXPECT_EQ(f.GetIntOr("s", 5).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(*f.GetFloatOr("missing", 1.5), 1.5);
  EXPECT_EQ(*f.GetBoolOr("missing", true), true);
  EXPECT_EQ(*f.GetStringOr("missing", "d"), "d");
  EXPECT_EQ(f.GetStringOr("u32", "d").status().code(), StatusCode::kInvalidArgument);
}

TEST(GgufUtf8, Validator) {
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xe4\xb8"));          // cut short
  EXPECT_FALSE(IsValidUtf8("\x80"));
}

TEST(GgufOpen, MissingFile) {
  auto r = GgufFile::Open(testing::TempDir() + "/does-not-exist.gguf");
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
}

TEST(GgufOpen, ErrorsNameThePath) {
  const std::string path = testing::TempDir() + "/corrupt.gguf";
  std::vector<uint8_t> bytes = SmallFile();
  bytes.pop_back();
  FILE* fp = std::fopen(path.c_str(), "wb");
  ASSERT_NE(fp, nullptr);
  std::fwrite(bytes.data(), 1, bytes.size(), fp);
  std::fclose(fp);
  auto r = GgufFile::Open(path);
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_TRUE(HasText(r.status().message(), path + ": gguf: tensor 'b.weight'"));
}

TEST(GgufRealModel, DefaultModelFacts) {
  const std::string path = testing::DefaultModelPath();
  if (path.empty()) GTEST_SKIP() << "default model not installed (run scripts/setup.sh)";
  auto r = GgufFile::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const GgufFile& f = **r;
  EXPECT_EQ(*f.GetString("general.architecture"), "llama");
  EXPECT_EQ(f.tensors().size(), 272u);
  const TensorInfo* emb = f.FindTensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->dtype, DType::kQ8_0);
  EXPECT_EQ(emb->shape, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(*f.GetInt("llama.embedding_length"), 576);
  EXPECT_EQ(f.GetStringArray("tokenizer.ggml.tokens")->size(), 49152u);
  uint64_t total = 0;
  for (const TensorInfo& t : f.tensors()) total += t.nbytes;
  EXPECT_LE(f.data_offset() + total, f.file_size());
}

// Runs tests/reference/gguf_dump.py (the Python `gguf` package) and compares its view of a file
// our writer made with our reader's.
TEST(GgufReference, PythonGgufPackageAgrees) {
  const std::string python = testing::ReferencePython();
  if (python.empty()) GTEST_SKIP() << "no .venv with the gguf package (run scripts/setup.sh)";
  GgufWriter w(3);
  w.SetAlignment(64);
  w.SetString("general.architecture", "llama");
  w.SetString("general.name", "caf\xc3\xa9");
  w.SetUint8("u8", 255);
  w.SetInt8("i8", -128);
  w.SetUint16("u16", 65535);
  w.SetInt16("i16", -32768);
  w.SetUint32("u32", 4294967295u);
  w.SetInt32("i32", -7);
  w.SetUint64("u64", 1ull << 60);
  w.SetInt64("i64", -(1ll << 60));
  w.SetFloat32("f32", 0.1f);
  w.SetFloat64("f64", 1e-300);
  w.SetBool("b", true);
  w.SetStringArray("sa", {"x", "", "yz"});
  w.SetInt32Array("ia", {3, -4});
  w.SetFloat32Array("fa", {0.5f, 3.25f});
  ASSERT_TRUE(w.AddTensor("f32.w", DType::kF32, {3, 2}, Iota(24)).ok());
  ASSERT_TRUE(w.AddTensor("q4.w", DType::kQ4_0, {64, 3}, Iota(18 * 6, 1)).ok());
  ASSERT_TRUE(w.AddTensor("q6k.w", DType::kQ6_K, {256}, Iota(210, 2)).ok());
  ASSERT_TRUE(w.AddTensor("f16.w", DType::kF16, {5, 1, 2}, Iota(20, 3)).ok());
  const std::string path = testing::TempDir() + "/reference.gguf";
  ASSERT_TRUE(w.WriteFile(path).ok());

  const std::string cmd =
      python + " " + testing::SourceDir() + "/tests/reference/gguf_dump.py " + path + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  ASSERT_EQ(pclose(pipe), 0) << out;
  const auto ref = nlohmann::json::parse(out);

  auto r = GgufFile::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const GgufFile& f = **r;
  EXPECT_EQ(ref["version"], f.version());
  EXPECT_EQ(ref["alignment"], f.alignment());
  EXPECT_EQ(ref["data_offset"], f.data_offset());
  ASSERT_EQ(ref["kv"].size(), f.metadata().size());
  for (size_t i = 0; i < f.metadata().size(); ++i) {
    const auto& [key, value] = f.metadata()[i];
    const auto& e = ref["kv"][i];
    SCOPED_TRACE(key);
    EXPECT_EQ(e["key"], key);
    EXPECT_EQ(e["type"].get<std::string>(), ValueTypeName(value.type));
    const auto& v = e["value"];
    switch (value.type) {
      case ValueType::kString:
        EXPECT_EQ(v.get<std::string>(), *f.GetString(key));
        break;
      case ValueType::kBool:
        EXPECT_EQ(v.get<bool>(), *f.GetBool(key));
        break;
      case ValueType::kFloat32:
      case ValueType::kFloat64:
        EXPECT_EQ(v.get<double>(), *f.GetFloat(key));
        break;
      case ValueType::kUint64:
        EXPECT_EQ(v.get<uint64_t>(), *f.GetUint(key));
        break;
      case ValueType::kArray: {
        const Array& arr = std::get<Array>(value.data);
        EXPECT_EQ(e["elem_type"].get<std::string>(), ValueTypeName(arr.elem_type));
        if (arr.elem_type == ValueType::kString) {
          EXPECT_EQ(v.get<std::vector<std::string>>(), *f.GetStringArray(key));
        } else {
          EXPECT_EQ(v.get<std::vector<double>>(), *f.GetFloatArray(key));
        }
        break;
      }
      default:
        EXPECT_EQ(v.get<int64_t>(), *f.GetInt(key));
        break;
    }
  }
  ASSERT_EQ(ref["tensors"].size(), f.tensors().size());
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const TensorInfo& t = f.tensors()[i];
    const auto& e = ref["tensors"][i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(e["name"], t.name);
    std::string type_name(DTypeName(t.dtype));
    for (char& c : type_name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_EQ(e["type"].get<std::string>(), type_name);
    EXPECT_EQ(e["shape"].get<std::vector<int64_t>>(), t.shape);
    EXPECT_EQ(e["offset"], t.offset);
    EXPECT_EQ(e["nbytes"], t.nbytes);
    uint64_t h = 0xCBF29CE484222325ull;
    for (uint64_t k = 0; k < t.nbytes; ++k) h = (h ^ t.data[k]) * 0x100000001B3ull;
    EXPECT_EQ(e["fnv1a64"].get<std::string>(), std::to_string(h));
  }
}

}  // namespace
}  // namespace cleave::gguf
