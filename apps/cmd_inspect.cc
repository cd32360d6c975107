// `cleave inspect [MODEL]`: metadata, tensor table and a summary of a GGUF file, as text or as
// JSON (--json). Long strings and arrays are shortened unless --full. Errors go to stderr and
// the exit code is 1.
#include <fmt/format.h>

#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "apps/commands.h"
#include "model/gguf.h"
#include "model/model_path.h"

namespace cleave::app {
namespace {

using gguf::Array;
using gguf::GgufFile;
using gguf::Value;
using gguf::ValueType;
using Json = nlohmann::ordered_json;

struct InspectOptions {
  std::string model;
  std::string model_flag;
  bool json = false;
  bool full = false;
  bool no_tensors = false;
};

constexpr size_t kMaxStringChars = 80;
constexpr size_t kMaxArrayItems = 8;

// Printable form of a metadata string: control characters escaped, shortened unless `full`.
std::string DisplayString(const std::string& s, bool full) {
  std::string out;
  size_t shown = full ? s.size() : std::min(s.size(), kMaxStringChars);
  // Do not cut a UTF-8 sequence in half.
  while (shown < s.size() && shown > 0 && (static_cast<unsigned char>(s[shown]) & 0xC0) == 0x80) {
    --shown;
  }
  out.reserve(shown + 2);
  out += '"';
  for (size_t i = 0; i < shown; ++i) {
    char c = s[i];
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  out += '"';
  if (shown < s.size()) out += fmt::format("... ({} bytes)", s.size());
  return out;
}

std::string TypeLabel(const Value& v) {
  if (v.type != ValueType::kArray) return std::string(gguf::ValueTypeName(v.type));
  const Array& arr = std::get<Array>(v.data);
  return fmt::format("[{}; {}]", gguf::ValueTypeName(arr.elem_type), arr.items.size());
}

std::string ScalarText(const Value& v, bool full) {
  switch (v.type) {
    case ValueType::kString:
      return DisplayString(std::get<std::string>(v.data), full);
    case ValueType::kBool:
      return std::get<bool>(v.data) ? "true" : "false";
    // Shortest text that round-trips at the stored precision (1e-05, not 9.99999974e-06).
    case ValueType::kFloat32:
      return fmt::format("{}", static_cast<float>(std::get<double>(v.data)));
    case ValueType::kFloat64:
      return fmt::format("{}", std::get<double>(v.data));
    case ValueType::kArray: {
      const Array& arr = std::get<Array>(v.data);
      size_t shown = full ? arr.items.size() : std::min(arr.items.size(), kMaxArrayItems);
      std::string out = "[";
      for (size_t i = 0; i < shown; ++i) {
        if (i > 0) out += ", ";
        out += ScalarText(arr.items[i], full);
      }
      if (shown < arr.items.size()) out += fmt::format(", ... {} more", arr.items.size() - shown);
      return out + "]";
    }
    default:
      if (v.is_integer()) {
        return std::holds_alternative<int64_t>(v.data)
                   ? fmt::format("{}", std::get<int64_t>(v.data))
                   : fmt::format("{}", std::get<uint64_t>(v.data));
      }
      return "?";
  }
}

Json ValueJson(const Value& v, bool full) {
  switch (v.type) {
    case ValueType::kString: {
      const auto& s = std::get<std::string>(v.data);
      if (full || s.size() <= kMaxStringChars * 8) return s;
      return s.substr(0, kMaxStringChars * 8);
    }
    case ValueType::kBool:
      return std::get<bool>(v.data);
    case ValueType::kFloat32:
    case ValueType::kFloat64:
      return std::get<double>(v.data);
    case ValueType::kArray: {
      const Array& arr = std::get<Array>(v.data);
      size_t shown = full ? arr.items.size() : std::min(arr.items.size(), kMaxArrayItems);
      Json items = Json::array();
      for (size_t i = 0; i < shown; ++i) items.push_back(ValueJson(arr.items[i], full));
      return items;
    }
    default:
      if (std::holds_alternative<int64_t>(v.data)) return std::get<int64_t>(v.data);
      return std::get<uint64_t>(v.data);
  }
}

std::string HumanBytes(uint64_t n) {
  if (n < 1024) return fmt::format("{} B", n);
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int unit = -1;
  while (v >= 1024 && unit < 3) {
    v /= 1024;
    ++unit;
  }
  return fmt::format("{:.2f} {}", v, kUnits[unit]);
}

std::string HumanCount(uint64_t n) {
  if (n >= 1000000000) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1000000) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1000) return fmt::format("{:.2f}K", n / 1e3);
  return fmt::format("{}", n);
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += fmt::format("{}{}", i ? ", " : "", shape[i]);
  return out + "]";
}

// What the summary reports; optional fields are absent from the file or of the wrong type.
struct Summary {
  std::string architecture;
  std::string name;
  uint64_t parameters = 0;
  uint64_t tensor_bytes = 0;
  std::map<std::string, std::pair<uint64_t, uint64_t>> dtypes;  // name -> (tensors, bytes)
  std::vector<std::pair<std::string, int64_t>> hparams;         // label -> value, when present
};

std::optional<int64_t> IntKey(const GgufFile& file, const std::string& key) {
  auto v = file.GetInt(key);
  if (!v.ok()) return std::nullopt;
  return *v;
}

Summary Summarize(const GgufFile& file) {
  Summary s;
  auto arch = file.GetString("general.architecture");
  if (arch.ok()) s.architecture = *arch;
  auto name = file.GetString("general.name");
  if (name.ok()) s.name = *name;
  for (const gguf::TensorInfo& t : file.tensors()) {
    s.parameters += static_cast<uint64_t>(t.num_elements());
    s.tensor_bytes += t.nbytes;
    auto& [count, bytes] = s.dtypes[std::string(DTypeName(t.dtype))];
    ++count;
    bytes += t.nbytes;
  }
  const std::string& a = s.architecture;
  const std::pair<const char*, std::string> keys[] = {
      {"context length", a + ".context_length"}, {"layers", a + ".block_count"},
      {"embedding", a + ".embedding_length"},    {"feed forward", a + ".feed_forward_length"},
      {"heads", a + ".attention.head_count"},    {"kv heads", a + ".attention.head_count_kv"},
      {"experts", a + ".expert_count"},          {"vocab", a + ".vocab_size"},
  };
  if (!a.empty()) {
    for (const auto& [label, key] : keys) {
      if (auto v = IntKey(file, key)) s.hparams.emplace_back(label, *v);
    }
  }
  bool has_vocab = false;
  for (const auto& [label, v] : s.hparams) has_vocab |= std::string_view(label) == "vocab";
  if (!has_vocab) {
    if (const Value* tokens = file.Find("tokenizer.ggml.tokens");
        tokens != nullptr && tokens->type == ValueType::kArray) {
      s.hparams.emplace_back("vocab", std::get<Array>(tokens->data).items.size());
    }
  }
  return s;
}

void PrintText(const GgufFile& file, const InspectOptions& opts) {
  fmt::print("file: {}\n", file.path());
  fmt::print("format: GGUF v{}, alignment {}, data at offset {}, {} ({} bytes)\n\n", file.version(),
             file.alignment(), file.data_offset(), HumanBytes(file.file_size()), file.file_size());

  size_t key_width = 0;
  for (const auto& [key, value] : file.metadata()) key_width = std::max(key_width, key.size());
  fmt::print("metadata ({} keys):\n", file.metadata().size());
  for (const auto& [key, value] : file.metadata()) {
    fmt::print("  {:<{}}  {:<16}  {}\n", key, key_width, TypeLabel(value),
               ScalarText(value, opts.full));
  }

  if (!opts.no_tensors) {
    size_t name_width = 4;
    for (const auto& t : file.tensors()) name_width = std::max(name_width, t.name.size());
    fmt::print("\ntensors ({}):\n", file.tensors().size());
    fmt::print("  {:<{}}  {:<8}  {:<22}  {:>12}\n", "name", name_width, "type", "shape", "bytes");
    for (const auto& t : file.tensors()) {
      fmt::print("  {:<{}}  {:<8}  {:<22}  {:>12}\n", t.name, name_width, DTypeName(t.dtype),
                 ShapeText(t.shape), t.nbytes);
    }
  }

  const Summary s = Summarize(file);
  fmt::print("\nsummary:\n");
  fmt::print("  architecture: {}\n", s.architecture.empty() ? "(unknown)" : s.architecture);
  if (!s.name.empty()) fmt::print("  name: {}\n", DisplayString(s.name, opts.full));
  fmt::print("  parameters: {} ({})\n", HumanCount(s.parameters), s.parameters);
  fmt::print("  size on disk: {} ({} bytes; tensor data {})\n", HumanBytes(file.file_size()),
             file.file_size(), HumanBytes(s.tensor_bytes));
  std::string types;
  for (const auto& [dtype, cb] : s.dtypes) {
    types += fmt::format("{}{} x{} ({})", types.empty() ? "" : ", ", dtype, cb.first,
                         HumanBytes(cb.second));
  }
  fmt::print("  tensor types: {}\n", types.empty() ? "(no tensors)" : types);
  for (const auto& [label, v] : s.hparams) fmt::print("  {}: {}\n", label, v);
}

void PrintJson(const GgufFile& file, const InspectOptions& opts) {
  Json out;
  out["path"] = file.path();
  out["version"] = file.version();
  out["alignment"] = file.alignment();
  out["data_offset"] = file.data_offset();
  out["file_size"] = file.file_size();
  Json metadata = Json::array();
  for (const auto& [key, value] : file.metadata()) {
    Json entry;
    entry["key"] = key;
    entry["type"] = gguf::ValueTypeName(value.type);
    if (value.type == ValueType::kArray) {
      const Array& arr = std::get<Array>(value.data);
      entry["elem_type"] = gguf::ValueTypeName(arr.elem_type);
      entry["count"] = arr.items.size();
    }
    entry["value"] = ValueJson(value, opts.full);
    if (!opts.full) {
      bool truncated = false;
      if (value.type == ValueType::kArray) {
        truncated = std::get<Array>(value.data).items.size() > kMaxArrayItems;
      } else if (value.type == ValueType::kString) {
        truncated = std::get<std::string>(value.data).size() > kMaxStringChars * 8;
      }
      if (truncated) entry["truncated"] = true;
    }
    metadata.push_back(std::move(entry));
  }
  out["metadata"] = std::move(metadata);
  if (!opts.no_tensors) {
    Json tensors = Json::array();
    for (const auto& t : file.tensors()) {
      tensors.push_back({{"name", t.name},
                         {"type", DTypeName(t.dtype)},
                         {"shape", t.shape},
                         {"offset", t.offset},
                         {"bytes", t.nbytes}});
    }
    out["tensors"] = std::move(tensors);
  }
  const Summary s = Summarize(file);
  Json summary;
  summary["architecture"] = s.architecture;
  if (!s.name.empty()) summary["name"] = s.name;
  summary["parameters"] = s.parameters;
  summary["file_size"] = file.file_size();
  summary["tensor_bytes"] = s.tensor_bytes;
  summary["tensor_count"] = file.tensors().size();
  Json types = Json::object();
  for (const auto& [dtype, cb] : s.dtypes)
    types[dtype] = {{"tensors", cb.first}, {"bytes", cb.second}};
  summary["tensor_types"] = std::move(types);
  for (auto [label, v] : s.hparams) {
    std::string k(label);
    for (char& c : k) c = c == ' ' ? '_' : c;
    summary[k] = v;
  }
  out["summary"] = std::move(summary);
  // Metadata strings come from an untrusted file: replace invalid UTF-8 rather than throw.
  fmt::print("{}\n", out.dump(2, ' ', false, Json::error_handler_t::replace));
}

int RunInspect(const InspectOptions& opts) {
  if (!opts.model.empty() && !opts.model_flag.empty() && opts.model != opts.model_flag) {
    fmt::print(stderr, "error: give the model either as an argument or with -m, not both\n");
    return 1;
  }
  auto resolved = ResolveModelPath(opts.model.empty() ? opts.model_flag : opts.model);
  if (!resolved.ok()) {
    fmt::print(stderr, "error: {}\n", resolved.status().message());
    return 1;
  }
  auto file = gguf::GgufFile::Open(*resolved);
  if (!file.ok()) {
    fmt::print(stderr, "error: {}\n", file.status().ToString());
    return 1;
  }
  if (opts.json) {
    PrintJson(**file, opts);
  } else {
    PrintText(**file, opts);
  }
  return 0;
}

}  // namespace

void RegisterInspect(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("inspect", "Print a GGUF file's metadata, tensors and summary");
  auto opts = std::make_shared<InspectOptions>();
  cmd->add_option("model", opts->model, "GGUF file (default: the default model)");
  cmd->add_option("-m,--model", opts->model_flag, "GGUF file (same as the positional argument)");
  cmd->add_flag("--json", opts->json, "Machine-readable JSON output");
  cmd->add_flag("--full", opts->full, "Print long strings and arrays in full");
  cmd->add_flag("--no-tensors", opts->no_tensors, "Leave out the tensor table");
  cmd->callback([opts, &exit_code] { exit_code = RunInspect(*opts); });
}

}  // namespace cleave::app
