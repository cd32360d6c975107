// Writes a few small valid GGUF files (every value type, nested arrays, several alignments and
// tensor types) into DIR, as the seed corpus for gguf_fuzz.
//   gguf_fuzz_seeds DIR
#include <cstdio>
#include <string>
#include <vector>

#include "model/gguf_writer.h"

namespace {

using cleave::DType;
using cleave::gguf::GgufWriter;
using cleave::gguf::Value;
using cleave::gguf::ValueType;

std::vector<uint8_t> Bytes(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 13 + 1);
  return v;
}

int Write(const GgufWriter& writer, const std::string& path) {
  cleave::Status s = writer.WriteFile(path);
  if (!s.ok()) {
    std::fprintf(stderr, "gguf_fuzz_seeds: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: gguf_fuzz_seeds DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  int failures = 0;

  GgufWriter empty(2);
  failures += Write(empty, dir + "/empty_v2.gguf");

  GgufWriter scalars;
  scalars.SetUint8("u8", 1);
  scalars.SetInt8("i8", -1);
  scalars.SetUint16("u16", 2);
  scalars.SetInt16("i16", -2);
  scalars.SetUint32("u32", 3);
  scalars.SetInt32("i32", -3);
  scalars.SetUint64("u64", 4);
  scalars.SetInt64("i64", -4);
  scalars.SetFloat32("f32", 0.5f);
  scalars.SetFloat64("f64", 0.25);
  scalars.SetBool("b", true);
  scalars.SetString("s", "text");
  failures += Write(scalars, dir + "/scalars.gguf");

  GgufWriter arrays;
  arrays.SetStringArray("tokenizer.ggml.tokens", {"a", "b", "<s>"});
  arrays.SetInt32Array("tokenizer.ggml.token_type", {1, 1, 3});
  arrays.SetFloat32Array("tokenizer.ggml.scores", {0.f, -1.f, -2.f});
  std::vector<Value> rows = {
      Value::MakeArray(ValueType::kUint8, {Value::Uint(ValueType::kUint8, 7)}),
      Value::MakeArray(ValueType::kUint8, {})};
  (void)arrays.Set("nested", Value::MakeArray(ValueType::kArray, std::move(rows)));
  failures += Write(arrays, dir + "/arrays.gguf");

  const uint32_t alignments[] = {1, 8, 32, 64};
  for (uint32_t align : alignments) {
    GgufWriter model;
    model.SetString("general.architecture", "llama");
    model.SetAlignment(align);
    model.SetUint32("llama.block_count", 1);
    (void)model.AddTensor("f32", DType::kF32, {4, 2}, Bytes(32));
    (void)model.AddTensor("f16", DType::kF16, {3}, Bytes(6));
    (void)model.AddTensor("q4_0", DType::kQ4_0, {32}, Bytes(18));
    (void)model.AddTensor("q4_k", DType::kQ4_K, {256}, Bytes(144));
    failures += Write(model, dir + "/model_align" + std::to_string(align) + ".gguf");
  }
  return failures == 0 ? 0 : 1;
}
