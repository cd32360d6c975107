// Runtime values of cleave's Jinja engine, modelled on the Python objects jinja2 works with:
// undefined, None, bool, int, float, str, list/tuple, dict (insertion-ordered), namespace and
// callables. Lists and dicts are shared and immutable once built (HF renders in an
// ImmutableSandboxedEnvironment); only namespace() objects are mutated, through `set ns.x = ...`.
//
// Text conversions follow Python: ToStr() is str(x) (what `{{ x }}` prints), ToRepr() is repr(x),
// ToJson() is json.dumps(x, ensure_ascii=False, ...) as HF's `tojson` filter calls it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace cleave::jinja {

// Thrown inside the engine for template errors; the public API (chat_template.cc) catches it and
// returns a Status. `kind` picks the status code.
class JinjaError : public std::runtime_error {
 public:
  enum class Kind { kTemplate, kRaised, kLimit };
  JinjaError(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

[[noreturn]] void Fail(const std::string& message);

class Value;
class Interpreter;
struct CallArgs;

struct ListData {
  std::vector<Value> items;
  bool is_tuple = false;
};

// Insertion-ordered mapping. Keys are compared with Python equality (1 == 1.0 == True).
struct DictData {
  std::vector<std::pair<Value, Value>> items;
  bool is_namespace = false;  // namespace(): attribute assignment allowed, prints as <Namespace>

  const Value* Find(const Value& key) const;
  const Value* Find(std::string_view key) const;
  void Set(const Value& key, Value value);
};

// Lists and dicts are shared and mutable (namespace attributes), so a template can build a
// reference cycle ({% set ns.x = ns %}) that shared_ptr never frees. While a RenderArena is alive
// on a thread, every list and dict created on it is recorded; when the outermost arena ends,
// their contents are cleared, which breaks any cycle. Values must not outlive the render.
class RenderArena {
 public:
  RenderArena();
  ~RenderArena();
  RenderArena(const RenderArena&) = delete;
  RenderArena& operator=(const RenderArena&) = delete;
};

using NativeFunction = std::function<Value(Interpreter&, CallArgs&)>;
struct CallableData {
  std::string name;
  NativeFunction fn;
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kCallable };

  Value() = default;  // undefined
  static Value Undefined(std::string hint = {});
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double f);
  static Value String(std::string s);
  static Value List(std::vector<Value> items, bool is_tuple = false);
  static Value Dict(std::shared_ptr<DictData> dict);
  static Value NewDict();
  static Value Callable(std::string name, NativeFunction fn);
  // Converts JSON (nlohmann::json or ordered_json; only the latter keeps key order, which
  // `tojson` prints); depth beyond `max_depth` throws JinjaError.
  template <typename Json>
  static Value FromJson(const Json& j, int max_depth = 128);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return is_int() || is_float() || is_bool(); }  // Python: bool is int
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_callable() const { return kind_ == Kind::kCallable; }

  bool bool_value() const { return b_; }
  int64_t int_value() const { return is_bool() ? (b_ ? 1 : 0) : i_; }
  double AsDouble() const { return is_float() ? f_ : static_cast<double>(int_value()); }
  const std::string& str() const { return s_ ? *s_ : EmptyString(); }  // undefined: the hint
  const std::vector<Value>& items() const { return list_->items; }
  const ListData& list() const { return *list_; }
  const DictData& dict() const { return *dict_; }
  DictData& mutable_dict() const { return *dict_; }
  const CallableData& callable() const { return *fn_; }
  const std::string& undefined_hint() const { return str(); }

  bool Truthy() const;
  // Python str(): what `{{ value }}` prints. Undefined prints as "".
  std::string ToStr() const;
  std::string ToRepr() const;
  // json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=sort_keys). indent < 0: none.
  std::string ToJson(int indent = -1, bool sort_keys = false) const;
  nlohmann::json ToNlohmann() const;
  // Python type name for error messages ("str", "list", "dict object" ...).
  std::string TypeName() const;

  // Python ==.
  bool Equals(const Value& other) const;
  // Python <: -1, 0, 1; throws JinjaError for unorderable types.
  int Compare(const Value& other) const;
  // Number of elements for str (code points), list and dict; throws for others.
  int64_t Length() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<const std::string> s_;
  std::shared_ptr<ListData> list_;
  std::shared_ptr<DictData> dict_;
  std::shared_ptr<CallableData> fn_;

  static const std::string& EmptyString();
};

template <typename Json>
Value Value::FromJson(const Json& j, int max_depth) {
  if (max_depth < 0) Fail("JSON input nested too deeply");
  if (j.is_null()) return None();
  if (j.is_boolean()) return Bool(j.template get<bool>());
  if (j.is_number_unsigned()) {
    uint64_t u = j.template get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return Float(static_cast<double>(u));
    return Int(static_cast<int64_t>(u));
  }
  if (j.is_number_integer()) return Int(j.template get<int64_t>());
  if (j.is_number_float()) return Float(j.template get<double>());
  if (j.is_string()) return String(j.template get<std::string>());
  if (j.is_array()) {
    std::vector<Value> items;
    items.reserve(j.size());
    for (const auto& e : j) items.push_back(FromJson(e, max_depth - 1));
    return List(std::move(items));
  }
  if (j.is_object()) {
    auto dict = std::make_shared<DictData>();
    dict->items.reserve(j.size());
    for (auto it = j.begin(); it != j.end(); ++it) {
      dict->items.emplace_back(String(it.key()), FromJson(it.value(), max_depth - 1));
    }
    return Dict(std::move(dict));
  }
  return None();  // binary and discarded values have no template meaning
}

// Python float repr (shortest round-trip, '1e+20', '1.0', 'inf', 'nan').
std::string FormatPythonFloat(double f);
// Python repr of a str, e.g. 'it\'s' -> "it's".
std::string PythonStrRepr(std::string_view s);
// Number of Unicode code points in UTF-8 text (invalid bytes count one each).
int64_t Utf8Length(std::string_view s);
// Decodes UTF-8 into code points (invalid bytes map to themselves as U+00xx-like values).
std::vector<uint32_t> Utf8Decode(std::string_view s);
void Utf8Append(std::string& out, uint32_t cp);

}  // namespace cleave::jinja
