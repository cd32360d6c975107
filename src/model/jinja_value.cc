#include "model/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace cleave::jinja {

void Fail(const std::string& message) {
  throw JinjaError(JinjaError::Kind::kTemplate, message);
}

namespace {

constexpr int kMaxPrintDepth = 128;

bool KeyEquals(const Value& a, const Value& b) {
  return a.Equals(b);
}

void AppendJsonString(std::string& out, std::string_view s) {
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

std::string JsonFloat(double f) {
  if (std::isnan(f)) return "NaN";
  if (std::isinf(f)) return f > 0 ? "Infinity" : "-Infinity";
  return FormatPythonFloat(f);
}

// JSON object keys as Python's json module coerces them.
std::string JsonKey(const Value& key) {
  switch (key.kind()) {
    case Value::Kind::kString:
      return key.str();
    case Value::Kind::kInt:
      return std::to_string(key.int_value());
    case Value::Kind::kFloat:
      return JsonFloat(key.AsDouble());
    case Value::Kind::kBool:
      return key.bool_value() ? "true" : "false";
    case Value::Kind::kNone:
      return "null";
    default:
      Fail("keys must be str, int, float, bool or None, not " + key.TypeName());
  }
}

void AppendJson(std::string& out, const Value& v, int indent, bool sort_keys, int level) {
  if (level > kMaxPrintDepth) Fail("tojson: value nested too deeply");
  auto newline = [&](int lvl) {
    out.push_back('\n');
    out.append(static_cast<size_t>(indent) * lvl, ' ');
  };
  switch (v.kind()) {
    case Value::Kind::kNone:
      out += "null";
      return;
    case Value::Kind::kBool:
      out += v.bool_value() ? "true" : "false";
      return;
    case Value::Kind::kInt:
      out += std::to_string(v.int_value());
      return;
    case Value::Kind::kFloat:
      out += JsonFloat(v.AsDouble());
      return;
    case Value::Kind::kString:
      AppendJsonString(out, v.str());
      return;
    case Value::Kind::kList: {
      const auto& items = v.items();
      if (items.empty()) {
        out += "[]";
        return;
      }
      out.push_back('[');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out += indent >= 0 ? "," : ", ";
        if (indent >= 0) newline(level + 1);
        AppendJson(out, items[i], indent, sort_keys, level + 1);
      }
      if (indent >= 0) newline(level);
      out.push_back(']');
      return;
    }
    case Value::Kind::kDict: {
      if (v.dict().is_namespace) Fail("Object of type Namespace is not JSON serializable");
      std::vector<std::pair<std::string, const Value*>> entries;
      for (const auto& [key, value] : v.dict().items) entries.emplace_back(JsonKey(key), &value);
      if (entries.empty()) {
        out += "{}";
        return;
      }
      if (sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
      }
      out.push_back('{');
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i > 0) out += indent >= 0 ? "," : ", ";
        if (indent >= 0) newline(level + 1);
        AppendJsonString(out, entries[i].first);
        out += ": ";
        AppendJson(out, *entries[i].second, indent, sort_keys, level + 1);
      }
      if (indent >= 0) newline(level);
      out.push_back('}');
      return;
    }
    case Value::Kind::kUndefined:
      Fail("Object of type Undefined is not JSON serializable");
    case Value::Kind::kCallable:
      Fail("Object of type function is not JSON serializable");
  }
}

void AppendRepr(std::string& out, const Value& v, int level) {
  if (level > kMaxPrintDepth) Fail("value nested too deeply to print");
  switch (v.kind()) {
    case Value::Kind::kString:
      out += PythonStrRepr(v.str());
      return;
    case Value::Kind::kList: {
      const auto& l = v.list();
      out.push_back(l.is_tuple ? '(' : '[');
      for (size_t i = 0; i < l.items.size(); ++i) {
        if (i > 0) out += ", ";
        AppendRepr(out, l.items[i], level + 1);
      }
      if (l.is_tuple && l.items.size() == 1) out.push_back(',');
      out.push_back(l.is_tuple ? ')' : ']');
      return;
    }
    case Value::Kind::kDict: {
      if (v.dict().is_namespace) out += "<Namespace ";
      out.push_back('{');
      bool first = true;
      for (const auto& [key, value] : v.dict().items) {
        if (!first) out += ", ";
        first = false;
        AppendRepr(out, key, level + 1);
        out += ": ";
        AppendRepr(out, value, level + 1);
      }
      out.push_back('}');
      if (v.dict().is_namespace) out.push_back('>');
      return;
    }
    default:
      out += v.ToStr();
      return;
  }
}

}  // namespace

const Value* DictData::Find(const Value& key) const {
  for (const auto& [k, v] : items) {
    if (KeyEquals(k, key)) return &v;
  }
  return nullptr;
}

const Value* DictData::Find(std::string_view key) const {
  for (const auto& [k, v] : items) {
    if (k.is_string() && k.str() == key) return &v;
  }
  return nullptr;
}

void DictData::Set(const Value& key, Value value) {
  for (auto& [k, v] : items) {
    if (KeyEquals(k, key)) {
      v = std::move(value);
      return;
    }
  }
  items.emplace_back(key, std::move(value));
}

const std::string& Value::EmptyString() {
  static const std::string* empty = new std::string();
  return *empty;
}

Value Value::Undefined(std::string hint) {
  Value v;
  v.s_ = std::make_shared<const std::string>(std::move(hint));
  return v;
}
Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}
Value Value::Bool(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.b_ = b;
  return v;
}
Value Value::Int(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.i_ = i;
  return v;
}
Value Value::Float(double f) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.f_ = f;
  return v;
}
Value Value::String(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.s_ = std::make_shared<const std::string>(std::move(s));
  return v;
}
namespace {
struct ArenaState {
  int depth = 0;
  std::vector<std::weak_ptr<ListData>> lists;
  std::vector<std::weak_ptr<DictData>> dicts;
};
thread_local ArenaState arena_state;
}  // namespace

RenderArena::RenderArena() {
  ++arena_state.depth;
}

RenderArena::~RenderArena() {
  if (--arena_state.depth > 0) return;
  // Move the contents out before they are destroyed, so that destroying one container's items
  // never runs while another container is being cleared.
  std::vector<Value> doomed;
  for (auto& weak : arena_state.lists) {
    if (auto list = weak.lock()) {
      for (auto& item : list->items) doomed.push_back(std::move(item));
      list->items.clear();
    }
  }
  for (auto& weak : arena_state.dicts) {
    if (auto dict = weak.lock()) {
      for (auto& [key, value] : dict->items) {
        doomed.push_back(std::move(key));
        doomed.push_back(std::move(value));
      }
      dict->items.clear();
    }
  }
  arena_state.lists.clear();
  arena_state.dicts.clear();
}

Value Value::List(std::vector<Value> items, bool is_tuple) {
  Value v;
  v.kind_ = Kind::kList;
  v.list_ = std::make_shared<ListData>(ListData{std::move(items), is_tuple});
  if (arena_state.depth > 0) arena_state.lists.push_back(v.list_);
  return v;
}
Value Value::Dict(std::shared_ptr<DictData> dict) {
  Value v;
  v.kind_ = Kind::kDict;
  v.dict_ = std::move(dict);
  if (arena_state.depth > 0) arena_state.dicts.push_back(v.dict_);
  return v;
}
Value Value::NewDict() {
  return Dict(std::make_shared<DictData>());
}
Value Value::Callable(std::string name, NativeFunction fn) {
  Value v;
  v.kind_ = Kind::kCallable;
  v.fn_ = std::make_shared<CallableData>(CallableData{std::move(name), std::move(fn)});
  return v;
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return b_;
    case Kind::kInt:
      return i_ != 0;
    case Kind::kFloat:
      return f_ != 0.0;
    case Kind::kString:
      return !str().empty();
    case Kind::kList:
      return !list_->items.empty();
    case Kind::kDict:
      return !dict_->items.empty();
    case Kind::kCallable:
      return true;
  }
  return false;
}

std::string Value::ToStr() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return b_ ? "True" : "False";
    case Kind::kInt:
      return std::to_string(i_);
    case Kind::kFloat:
      return FormatPythonFloat(f_);
    case Kind::kString:
      return *s_;
    case Kind::kList:
    case Kind::kDict: {
      std::string out;
      AppendRepr(out, *this, 0);
      return out;
    }
    case Kind::kCallable:
      return "<function " + fn_->name + ">";
  }
  return "";
}

std::string Value::ToRepr() const {
  if (is_undefined()) return "Undefined";
  std::string out;
  AppendRepr(out, *this, 0);
  return out;
}

std::string Value::ToJson(int indent, bool sort_keys) const {
  std::string out;
  AppendJson(out, *this, indent, sort_keys, 0);
  return out;
}

nlohmann::json Value::ToNlohmann() const {
  switch (kind_) {
    case Kind::kNone:
      return nullptr;
    case Kind::kBool:
      return b_;
    case Kind::kInt:
      return i_;
    case Kind::kFloat:
      return f_;
    case Kind::kString:
      return *s_;
    case Kind::kList: {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& item : list_->items) arr.push_back(item.ToNlohmann());
      return arr;
    }
    case Kind::kDict: {
      nlohmann::json obj = nlohmann::json::object();
      for (const auto& [k, v] : dict_->items) obj[k.ToStr()] = v.ToNlohmann();
      return obj;
    }
    default:
      return nullptr;
  }
}

std::string Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kList:
      return list_->is_tuple ? "tuple" : "list";
    case Kind::kDict:
      return dict_->is_namespace ? "Namespace" : "dict";
    case Kind::kCallable:
      return "function";
  }
  return "object";
}

bool Value::Equals(const Value& other) const {
  if (is_number() && other.is_number()) {
    if (is_float() || other.is_float()) return AsDouble() == other.AsDouble();
    return int_value() == other.int_value();
  }
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kString:
      return str() == other.str();
    case Kind::kList: {
      if (list_->is_tuple != other.list_->is_tuple) return false;
      const auto& a = list_->items;
      const auto& b = other.list_->items;
      if (a.size() != b.size()) return false;
      for (size_t i = 0; i < a.size(); ++i) {
        if (!a[i].Equals(b[i])) return false;
      }
      return true;
    }
    case Kind::kDict: {
      if (dict_ == other.dict_) return true;
      if (dict_->is_namespace || other.dict_->is_namespace) return false;
      if (dict_->items.size() != other.dict_->items.size()) return false;
      for (const auto& [k, v] : dict_->items) {
        const Value* o = other.dict_->Find(k);
        if (o == nullptr || !v.Equals(*o)) return false;
      }
      return true;
    }
    case Kind::kCallable:
      return fn_ == other.fn_;
    default:
      return false;
  }
}

int Value::Compare(const Value& other) const {
  if (is_number() && other.is_number()) {
    if (is_float() || other.is_float()) {
      double a = AsDouble(), b = other.AsDouble();
      return a < b ? -1 : (a > b ? 1 : 0);
    }
    int64_t a = int_value(), b = other.int_value();
    return a < b ? -1 : (a > b ? 1 : 0);
  }
  if (is_string() && other.is_string()) {
    int c = str().compare(other.str());
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (is_list() && other.is_list() && list_->is_tuple == other.list_->is_tuple) {
    const auto& a = list_->items;
    const auto& b = other.list_->items;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
      if (!a[i].Equals(b[i])) return a[i].Compare(b[i]);
    }
    return a.size() < b.size() ? -1 : (a.size() > b.size() ? 1 : 0);
  }
  Fail("'<' not supported between instances of '" + TypeName() + "' and '" + other.TypeName() +
       "'");
}

int64_t Value::Length() const {
  switch (kind_) {
    case Kind::kUndefined:
      return 0;
    case Kind::kString:
      return Utf8Length(str());
    case Kind::kList:
      return static_cast<int64_t>(list_->items.size());
    case Kind::kDict:
      return static_cast<int64_t>(dict_->items.size());
    default:
      Fail("object of type '" + TypeName() + "' has no len()");
  }
}

std::string FormatPythonFloat(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  if (f == 0) return std::signbit(f) ? "-0.0" : "0.0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), f, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  // sci looks like "-1.2345e+17": split into sign, digits and exponent.
  bool negative = sci[0] == '-';
  size_t start = negative ? 1 : 0;
  size_t e_pos = sci.find('e');
  std::string digits;
  for (size_t i = start; i < e_pos; ++i) {
    if (sci[i] != '.') digits.push_back(sci[i]);
  }
  int exponent = std::stoi(sci.substr(e_pos + 1));
  int decpt = exponent + 1;  // position of the decimal point relative to the digits
  std::string out = negative ? "-" : "";
  if (decpt > 16 || decpt <= -4) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char ebuf[16];
    std::snprintf(ebuf, sizeof(ebuf), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += ebuf;
  } else if (decpt <= 0) {
    out += "0." + std::string(static_cast<size_t>(-decpt), '0') + digits;
  } else if (static_cast<size_t>(decpt) >= digits.size()) {
    out += digits + std::string(static_cast<size_t>(decpt) - digits.size(), '0') + ".0";
  } else {
    out += digits.substr(0, static_cast<size_t>(decpt)) + "." +
           digits.substr(static_cast<size_t>(decpt));
  }
  return out;
}

std::string PythonStrRepr(std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (uint32_t cp : Utf8Decode(s)) {
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(cp));
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp < 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", cp);
      out += buf;
    } else {
      Utf8Append(out, cp);
    }
  }
  out.push_back(quote);
  return out;
}

std::vector<uint32_t> Utf8Decode(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + static_cast<size_t>(len) > s.size()) {
      out.push_back(c);
      ++i;
      continue;
    }
    uint32_t cp = len == 1 ? c : (c & (0xff >> (len + 1)));
    bool ok = true;
    for (int k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
      if ((cc & 0xc0) != 0x80) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (!ok) {
      out.push_back(c);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += static_cast<size_t>(len);
  }
  return out;
}

int64_t Utf8Length(std::string_view s) {
  return static_cast<int64_t>(Utf8Decode(s).size());
}

void Utf8Append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

}  // namespace cleave::jinja
