// libFuzzer target for the GGUF reader: any input must parse or fail with a Status, never crash,
// read out of bounds or allocate without bound. When it parses, every getter is exercised, every
// tensor's first and last byte is read (libFuzzer's buffer is exactly the input, so ASan catches
// an extent bug), and the file is re-written with GgufWriter and must parse again with the same
// metadata and tensors.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "model/gguf.h"
#include "model/gguf_writer.h"

namespace {

using cleave::gguf::GgufFile;
using cleave::gguf::GgufWriter;

void ExerciseGetters(const GgufFile& file) {
  for (const auto& [key, value] : file.metadata()) {
    (void)file.GetString(key);
    (void)file.GetInt(key);
    (void)file.GetUint(key);
    (void)file.GetFloat(key);
    (void)file.GetBool(key);
    (void)file.GetStringArray(key);
    (void)file.GetFloatArray(key);
    (void)file.GetIntArray(key);
    CLEAVE_CHECK(file.Find(key) == &value);
  }
}

void RoundTrip(const GgufFile& file) {
  GgufWriter writer(file.version());
  for (const auto& [key, value] : file.metadata()) {
    cleave::Status s = writer.Set(key, value);
    CLEAVE_CHECK(s.ok(), "{}", s.ToString());
  }
  for (const auto& t : file.tensors()) {
    cleave::Status s =
        writer.AddTensorView(t.name, t.dtype, t.shape, std::span<const uint8_t>(t.data, t.nbytes));
    CLEAVE_CHECK(s.ok(), "{}", s.ToString());
  }
  auto bytes = writer.Serialize();
  CLEAVE_CHECK(bytes.ok(), "{}", bytes.status().ToString());
  auto again = GgufFile::Parse(*bytes);
  CLEAVE_CHECK(again.ok(), "{}", again.status().ToString());
  CLEAVE_CHECK((*again)->metadata().size() == file.metadata().size());
  CLEAVE_CHECK((*again)->tensors().size() == file.tensors().size());
  for (size_t i = 0; i < file.tensors().size(); ++i) {
    const auto& a = file.tensors()[i];
    const auto& b = (*again)->tensors()[i];
    CLEAVE_CHECK(a.name == b.name && a.dtype == b.dtype && a.shape == b.shape);
    CLEAVE_CHECK(a.nbytes == b.nbytes && std::memcmp(a.data, b.data, a.nbytes) == 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = GgufFile::Parse(std::span<const uint8_t>(data, size));
  if (!file.ok()) {
    CLEAVE_CHECK(file.status().message().find("offset") != std::string::npos, "{}",
                 file.status().ToString());
    return 0;
  }
  ExerciseGetters(**file);
  volatile uint8_t sink = 0;
  for (const auto& t : (*file)->tensors()) {
    sink = sink + t.data[0] + t.data[t.nbytes - 1];
  }
  RoundTrip(**file);
  return 0;
}
