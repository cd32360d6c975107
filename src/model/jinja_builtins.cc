#include "model/jinja_builtins.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <ctime>

namespace cleave::jinja {
namespace {

// jinja2's sandbox refuses larger ranges (MAX_RANGE).
constexpr int64_t kMaxRange = 100000;

bool IsPySpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

std::string Encode(const std::vector<uint32_t>& cps, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) Utf8Append(out, cps[i]);
  return out;
}

const std::string& RequireString(const Value& v, const char* what) {
  if (!v.is_string()) Fail(std::string(what) + ": expected a string, got " + v.TypeName());
  return v.str();
}

int64_t RequireInt(const Value& v, const char* what) {
  if (!v.is_int() && !v.is_bool()) Fail(std::string(what) + ": expected an integer");
  return v.int_value();
}

std::vector<std::string> PySplit(const std::string& s, const Value& sep, int64_t maxsplit) {
  std::vector<std::string> parts;
  if (sep.is_none() || sep.is_undefined()) {
    std::vector<uint32_t> cps = Utf8Decode(s);
    size_t i = 0;
    while (true) {
      while (i < cps.size() && IsPySpace(cps[i])) ++i;
      if (i >= cps.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit) {
        size_t end = cps.size();
        while (end > i && IsPySpace(cps[end - 1])) --end;
        parts.push_back(Encode(cps, i, end));
        break;
      }
      size_t j = i;
      while (j < cps.size() && !IsPySpace(cps[j])) ++j;
      parts.push_back(Encode(cps, i, j));
      i = j;
    }
    return parts;
  }
  const std::string& d = RequireString(sep, "split");
  if (d.empty()) Fail("empty separator");
  size_t start = 0;
  while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
    size_t p = s.find(d, start);
    if (p == std::string::npos) break;
    parts.push_back(s.substr(start, p - start));
    start = p + d.size();
  }
  parts.push_back(s.substr(start));
  return parts;
}

Value StringList(const std::vector<std::string>& parts) {
  std::vector<Value> items;
  items.reserve(parts.size());
  for (const auto& p : parts) items.push_back(Value::String(p));
  return Value::List(std::move(items));
}

bool MatchesAffix(const std::string& s, const Value& affix, bool prefix) {
  auto one = [&](const Value& a) {
    const std::string& x = RequireString(a, prefix ? "startswith" : "endswith");
    if (x.size() > s.size()) return false;
    return prefix ? s.compare(0, x.size(), x) == 0
                  : s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  if (affix.is_list()) {
    for (const auto& a : affix.items()) {
      if (one(a)) return true;
    }
    return false;
  }
  return one(affix);
}

std::string PyTitle(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    bool is_alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (is_alpha) {
      c = prev_cased ? static_cast<char>(std::tolower(c)) : static_cast<char>(std::toupper(c));
    }
    prev_cased = is_alpha;
  }
  return out;
}

// str.format with {}, {0} and {name} fields (no format specs).
std::string PyFormat(const std::string& fmt, const CallArgs& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    char c = fmt[i];
    if (c == '{' && i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out.push_back('{');
      ++i;
    } else if (c == '}' && i + 1 < fmt.size() && fmt[i + 1] == '}') {
      out.push_back('}');
      ++i;
    } else if (c == '{') {
      size_t close = fmt.find('}', i);
      if (close == std::string::npos) Fail("Single '{' encountered in format string");
      std::string field = fmt.substr(i + 1, close - i - 1);
      if (field.find_first_of(":!") != std::string::npos) Fail("format specs are not supported");
      const Value* v = nullptr;
      if (field.empty()) {
        v = auto_index < args.args.size() ? &args.args[auto_index++] : nullptr;
      } else if (std::all_of(field.begin(), field.end(), ::isdigit)) {
        size_t idx = std::stoul(field);
        v = idx < args.args.size() ? &args.args[idx] : nullptr;
      } else {
        v = args.Find(SIZE_MAX, field);
      }
      if (v == nullptr) Fail("format: missing argument '" + field + "'");
      out += v->ToStr();
      i = close;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// printf-style `fmt % args` for %s %r %d %i %f %% (with optional precision).
std::string PercentFormat(const std::string& fmt, const Value& arg) {
  std::vector<Value> args =
      arg.is_list() && arg.list().is_tuple ? arg.items() : std::vector<Value>{arg};
  std::string out;
  size_t next = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out.push_back(fmt[i]);
      continue;
    }
    size_t j = i + 1;
    int precision = -1;
    if (j < fmt.size() && fmt[j] == '.') {
      precision = 0;
      for (++j; j < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[j])); ++j) {
        precision = precision * 10 + (fmt[j] - '0');
      }
    }
    if (j >= fmt.size()) Fail("incomplete format");
    char conv = fmt[j];
    i = j;
    if (conv == '%') {
      out.push_back('%');
      continue;
    }
    if (next >= args.size()) Fail("not enough arguments for format string");
    const Value& v = args[next++];
    if (conv == 's') {
      out += v.ToStr();
    } else if (conv == 'r') {
      out += v.ToRepr();
    } else if (conv == 'd' || conv == 'i') {
      if (!v.is_number()) Fail("%d format: a number is required");
      out += std::to_string(v.is_float() ? static_cast<int64_t>(v.AsDouble()) : v.int_value());
    } else if (conv == 'f') {
      if (!v.is_number()) Fail("%f format: a number is required");
      char buf[64];
      std::snprintf(buf, sizeof(buf), "%.*f", precision < 0 ? 6 : precision, v.AsDouble());
      out += buf;
    } else {
      Fail(std::string("unsupported format character '") + conv + "'");
    }
  }
  if (next < args.size()) Fail("not all arguments converted during string formatting");
  return out;
}

Value Method(std::string name, NativeFunction fn) {
  return Value::Callable(std::move(name), std::move(fn));
}

Value StringMethod(const Value& self, const std::string& name) {
  const std::string s = self.str();
  if (name == "startswith" || name == "endswith") {
    bool prefix = name == "startswith";
    return Method(name, [s, prefix](Interpreter&, CallArgs& a) {
      return Value::Bool(MatchesAffix(s, a.Get(0, "prefix", Value::String("")), prefix));
    });
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    bool left = name != "rstrip", right = name != "lstrip";
    return Method(name, [s, left, right](Interpreter&, CallArgs& a) {
      return Value::String(PyStrip(s, a.Get(0, "chars", Value::None()), left, right));
    });
  }
  if (name == "split" || name == "rsplit") {
    bool reverse = name == "rsplit";
    return Method(name, [s, reverse](Interpreter&, CallArgs& a) {
      Value sep = a.Get(0, "sep", Value::None());
      int64_t maxsplit = RequireInt(a.Get(1, "maxsplit", Value::Int(-1)), "split");
      if (!reverse || maxsplit < 0) return StringList(PySplit(s, sep, maxsplit));
      // rsplit with a limit: split the reversed problem by scanning from the right.
      const std::string& d = RequireString(sep, "rsplit");
      std::vector<std::string> parts;
      size_t end = s.size();
      while (static_cast<int64_t>(parts.size()) < maxsplit) {
        size_t p = end >= d.size() ? s.rfind(d, end - d.size()) : std::string::npos;
        if (p == std::string::npos) break;
        parts.insert(parts.begin(), s.substr(p + d.size(), end - p - d.size()));
        end = p;
      }
      parts.insert(parts.begin(), s.substr(0, end));
      return StringList(parts);
    });
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    return Method(name, [s, name](Interpreter&, CallArgs&) {
      if (name == "upper") return Value::String(PyUpper(s));
      if (name == "lower") return Value::String(PyLower(s));
      if (name == "title") return Value::String(PyTitle(s));
      std::string out = PyLower(s);
      if (!out.empty())
        out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
      return Value::String(out);
    });
  }
  if (name == "replace") {
    return Method(name, [s](Interpreter& in, CallArgs& a) {
      std::string out = PyReplace(s, RequireString(a.Get(0, "old", Value()), "replace"),
                                  RequireString(a.Get(1, "new", Value()), "replace"),
                                  RequireInt(a.Get(2, "count", Value::Int(-1)), "replace"));
      in.CheckSize(out.size());
      return Value::String(std::move(out));
    });
  }
  if (name == "find" || name == "rfind" || name == "count" || name == "index") {
    return Method(name, [s, name](Interpreter&, CallArgs& a) {
      const std::string& sub = RequireString(a.Get(0, "sub", Value()), name.c_str());
      if (name == "count") {
        if (sub.empty()) return Value::Int(Utf8Length(s) + 1);
        int64_t n = 0;
        for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
        return Value::Int(n);
      }
      size_t p = name == "rfind" ? s.rfind(sub) : s.find(sub);
      if (p == std::string::npos) {
        if (name == "index") Fail("substring not found");
        return Value::Int(-1);
      }
      return Value::Int(Utf8Length(std::string_view(s).substr(0, p)));
    });
  }
  if (name == "join") {
    return Method(name, [s](Interpreter& in, CallArgs& a) {
      std::string out;
      bool first = true;
      for (const auto& item : Iterate(a.Get(0, "iterable", Value()))) {
        if (!first) out += s;
        first = false;
        out += RequireString(item, "join");
        in.CheckSize(out.size());
      }
      return Value::String(std::move(out));
    });
  }
  if (name == "format") {
    return Method(name, [s](Interpreter& in, CallArgs& a) {
      std::string out = PyFormat(s, a);
      in.CheckSize(out.size());
      return Value::String(std::move(out));
    });
  }
  if (name == "splitlines") {
    return Method(name, [s](Interpreter&, CallArgs&) {
      std::vector<std::string> lines;
      size_t start = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\n' || s[i] == '\r') {
          lines.push_back(s.substr(start, i - start));
          if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
          start = i + 1;
        }
      }
      if (start < s.size()) lines.push_back(s.substr(start));
      return StringList(lines);
    });
  }
  if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" ||
      name == "isupper" || name == "islower") {
    return Method(name, [s, name](Interpreter&, CallArgs&) {
      if (s.empty()) return Value::Bool(false);
      bool any_cased = false;
      for (unsigned char c : s) {
        bool ok;
        if (name == "isdigit")
          ok = std::isdigit(c);
        else if (name == "isalpha")
          ok = std::isalpha(c);
        else if (name == "isalnum")
          ok = std::isalnum(c);
        else if (name == "isspace")
          ok = std::isspace(c);
        else if (name == "isupper")
          ok = !std::islower(c), any_cased |= std::isupper(c) != 0;
        else
          ok = !std::isupper(c), any_cased |= std::islower(c) != 0;
        if (!ok) return Value::Bool(false);
      }
      return Value::Bool(name == "isupper" || name == "islower" ? any_cased : true);
    });
  }
  return Value::Undefined("'str object' has no attribute '" + name + "'");
}

Value DictMethod(const Value& self, const std::string& name) {
  if (name == "items" || name == "keys" || name == "values") {
    return Method(name, [self, name](Interpreter&, CallArgs&) {
      std::vector<Value> out;
      for (const auto& [k, v] : self.dict().items) {
        if (name == "items")
          out.push_back(Value::List({k, v}, /*is_tuple=*/true));
        else
          out.push_back(name == "keys" ? k : v);
      }
      return Value::List(std::move(out));
    });
  }
  if (name == "get") {
    return Method(name, [self](Interpreter&, CallArgs& a) {
      const Value* v = self.dict().Find(a.Get(0, "key", Value::None()));
      return v != nullptr ? *v : a.Get(1, "default", Value::None());
    });
  }
  return Value();
}

Value ListMethod(const Value& self, const std::string& name) {
  if (name == "index" || name == "count") {
    return Method(name, [self, name](Interpreter&, CallArgs& a) {
      Value x = a.Get(0, "value", Value());
      int64_t count = 0;
      for (size_t i = 0; i < self.items().size(); ++i) {
        if (!self.items()[i].Equals(x)) continue;
        if (name == "index") return Value::Int(static_cast<int64_t>(i));
        ++count;
      }
      if (name == "index") Fail("value is not in list");
      return Value::Int(count);
    });
  }
  return Value();
}

int64_t CheckedMul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) Fail("integer overflow");
  return r;
}

Value Repeat(Interpreter& in, const Value& seq, int64_t times) {
  if (times <= 0) return seq.is_string() ? Value::String("") : Value::List({}, seq.list().is_tuple);
  if (seq.is_string()) {
    in.CheckSize(static_cast<size_t>(CheckedMul(static_cast<int64_t>(seq.str().size()), times)));
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += seq.str();
    return Value::String(std::move(out));
  }
  in.CheckListSize(
      static_cast<size_t>(CheckedMul(static_cast<int64_t>(seq.items().size()), times)));
  std::vector<Value> out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), seq.items().begin(), seq.items().end());
  return Value::List(std::move(out), seq.list().is_tuple);
}

}  // namespace

std::string UndefinedMessage(const Value& undefined) {
  return undefined.undefined_hint().empty() ? "value is undefined" : undefined.undefined_hint();
}

std::vector<Value> Iterate(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      return {};
    case Value::Kind::kList:
      return value.items();
    case Value::Kind::kDict: {
      std::vector<Value> keys;
      for (const auto& [k, v] : value.dict().items) keys.push_back(k);
      return keys;
    }
    case Value::Kind::kString: {
      std::vector<Value> chars;
      for (uint32_t cp : Utf8Decode(value.str())) {
        std::string c;
        Utf8Append(c, cp);
        chars.push_back(Value::String(std::move(c)));
      }
      return chars;
    }
    default:
      Fail("'" + value.TypeName() + "' object is not iterable");
  }
}

bool Contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        Fail("'in <string>' requires string as left operand, not " + item.TypeName());
      }
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::kList:
      return std::any_of(container.items().begin(), container.items().end(),
                         [&](const Value& v) { return v.Equals(item); });
    case Value::Kind::kDict:
      return container.dict().Find(item) != nullptr;
    default:
      Fail("argument of type '" + container.TypeName() + "' is not iterable");
  }
}

Value BinaryOp(Interpreter& in, const std::string& op, const Value& left, const Value& right) {
  if (left.is_undefined()) Fail(UndefinedMessage(left));
  if (right.is_undefined()) Fail(UndefinedMessage(right));
  auto type_error = [&]() -> Value {
    Fail("unsupported operand type(s) for " + op + ": '" + left.TypeName() + "' and '" +
         right.TypeName() + "'");
  };
  if (left.is_number() && right.is_number()) {
    bool as_float = left.is_float() || right.is_float();
    int64_t a = left.int_value(), b = right.int_value();
    double x = left.AsDouble(), y = right.AsDouble();
    int64_t r = 0;
    if (op == "+") {
      if (as_float) return Value::Float(x + y);
      if (__builtin_add_overflow(a, b, &r)) Fail("integer overflow");
      return Value::Int(r);
    }
    if (op == "-") {
      if (as_float) return Value::Float(x - y);
      if (__builtin_sub_overflow(a, b, &r)) Fail("integer overflow");
      return Value::Int(r);
    }
    if (op == "*") return as_float ? Value::Float(x * y) : Value::Int(CheckedMul(a, b));
    if (op == "/") {
      if (y == 0) Fail("division by zero");
      return Value::Float(x / y);
    }
    if (op == "//" || op == "%") {
      if (as_float ? y == 0 : b == 0) Fail(op == "%" ? "modulo by zero" : "division by zero");
      if (as_float) {
        double q = std::floor(x / y);
        return op == "//" ? Value::Float(q) : Value::Float(x - q * y);
      }
      if (a == INT64_MIN && b == -1) Fail("integer overflow");
      int64_t q = a / b, m = a % b;
      if (m != 0 && ((m < 0) != (b < 0))) {
        --q;
        m += b;
      }
      return Value::Int(op == "//" ? q : m);
    }
    if (op == "**") {
      if (as_float || b < 0) {
        if (x == 0 && y < 0) Fail("0.0 cannot be raised to a negative power");
        return Value::Float(std::pow(x, y));
      }
      int64_t result = 1, base = a;
      for (int64_t e = b; e > 0; e >>= 1) {
        if (e & 1) result = CheckedMul(result, base);
        if (e > 1) base = CheckedMul(base, base);
      }
      return Value::Int(result);
    }
    return type_error();
  }
  if (op == "+") {
    if (left.is_string() && right.is_string()) {
      in.CheckSize(left.str().size() + right.str().size());
      return Value::String(left.str() + right.str());
    }
    if (left.is_list() && right.is_list() && left.list().is_tuple == right.list().is_tuple) {
      in.CheckListSize(left.items().size() + right.items().size());
      std::vector<Value> items = left.items();
      items.insert(items.end(), right.items().begin(), right.items().end());
      return Value::List(std::move(items), left.list().is_tuple);
    }
  }
  if (op == "*") {
    if ((left.is_string() || left.is_list()) && (right.is_int() || right.is_bool())) {
      return Repeat(in, left, right.int_value());
    }
    if ((right.is_string() || right.is_list()) && (left.is_int() || left.is_bool())) {
      return Repeat(in, right, left.int_value());
    }
  }
  if (op == "%" && left.is_string()) {
    std::string out = PercentFormat(left.str(), right);
    in.CheckSize(out.size());
    return Value::String(std::move(out));
  }
  return type_error();
}

Value GetAttr(Interpreter& in, const Value& obj, const std::string& name) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      Fail(UndefinedMessage(obj));
    case Value::Kind::kString:
      return StringMethod(obj, name);
    case Value::Kind::kDict: {
      if (obj.dict().is_namespace) {
        const Value* v = obj.dict().Find(name);
        return v != nullptr
                   ? *v
                   : Value::Undefined("'Namespace object' has no attribute '" + name + "'");
      }
      Value method = DictMethod(obj, name);
      if (!method.is_undefined()) return method;
      const Value* v = obj.dict().Find(name);
      return v != nullptr ? *v : Value::Undefined("'dict object' has no attribute '" + name + "'");
    }
    case Value::Kind::kList: {
      Value method = ListMethod(obj, name);
      if (!method.is_undefined()) return method;
      return Value::Undefined("'" + obj.TypeName() + " object' has no attribute '" + name + "'");
    }
    default:
      return Value::Undefined("'" + obj.ToStr() + "' has no attribute '" + name + "'");
  }
  (void)in;
}

Value GetItem(Interpreter& in, const Value& obj, const Value& key) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      Fail(UndefinedMessage(obj));
    case Value::Kind::kDict: {
      const Value* v = obj.dict().Find(key);
      if (v != nullptr) return *v;
      break;
    }
    case Value::Kind::kList:
    case Value::Kind::kString:
      if (key.is_int() || key.is_bool()) {
        int64_t i = key.int_value();
        if (obj.is_list()) {
          int64_t n = static_cast<int64_t>(obj.items().size());
          if (i < 0) i += n;
          if (i >= 0 && i < n) return obj.items()[static_cast<size_t>(i)];
        } else {
          std::vector<uint32_t> cps = Utf8Decode(obj.str());
          int64_t n = static_cast<int64_t>(cps.size());
          if (i < 0) i += n;
          if (i >= 0 && i < n)
            return Value::String(Encode(cps, static_cast<size_t>(i), static_cast<size_t>(i) + 1));
        }
        return Value::Undefined("index out of range");
      }
      break;
    default:
      break;
  }
  if (key.is_string()) return GetAttr(in, obj, key.str());
  return Value::Undefined("'" + obj.TypeName() + " object' has no element " + key.ToRepr());
}

Value SliceValue(const Value& obj, std::optional<int64_t> start, std::optional<int64_t> stop,
                 std::optional<int64_t> step) {
  if (obj.is_undefined()) Fail(UndefinedMessage(obj));
  int64_t st = step.value_or(1);
  if (st == 0) Fail("slice step cannot be zero");
  std::vector<uint32_t> cps;
  int64_t n;
  if (obj.is_string()) {
    cps = Utf8Decode(obj.str());
    n = static_cast<int64_t>(cps.size());
  } else if (obj.is_list()) {
    n = static_cast<int64_t>(obj.items().size());
  } else {
    Fail("'" + obj.TypeName() + "' object is not subscriptable");
  }
  auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
    if (!v) return dflt;
    int64_t x = *v;
    if (x < 0) x += n;
    if (st > 0) return std::clamp<int64_t>(x, 0, n);
    return std::clamp<int64_t>(x, -1, n - 1);
  };
  int64_t b = clamp(start, st > 0 ? 0 : n - 1);
  int64_t e = clamp(stop, st > 0 ? n : -1);
  std::vector<size_t> idx;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) idx.push_back(static_cast<size_t>(i));
  if (obj.is_string()) {
    std::string out;
    for (size_t i : idx) Utf8Append(out, cps[i]);
    return Value::String(std::move(out));
  }
  std::vector<Value> out;
  for (size_t i : idx) out.push_back(obj.items()[i]);
  return Value::List(std::move(out), obj.list().is_tuple);
}

std::string PyStrip(const std::string& s, const Value& chars, bool left, bool right) {
  std::vector<uint32_t> cps = Utf8Decode(s);
  std::vector<uint32_t> set;
  bool use_set = !(chars.is_none() || chars.is_undefined());
  if (use_set) set = Utf8Decode(RequireString(chars, "strip"));
  auto strip_it = [&](uint32_t cp) {
    return use_set ? std::find(set.begin(), set.end(), cp) != set.end() : IsPySpace(cp);
  };
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && strip_it(cps[b])) ++b;
  if (right)
    while (e > b && strip_it(cps[e - 1])) --e;
  return Encode(cps, b, e);
}

std::string PyLower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

std::string PyUpper(std::string s) {
  for (char& c : s) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return s;
}

std::string PyReplace(const std::string& s, const std::string& old, const std::string& repl,
                      int64_t count) {
  std::string out;
  if (old.empty()) {  // Python inserts `repl` between every character
    std::vector<uint32_t> cps = Utf8Decode(s);
    int64_t done = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        out += repl;
        ++done;
      }
      if (i < cps.size()) Utf8Append(out, cps[i]);
    }
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t p = s.find(old, start);
    if (p == std::string::npos) break;
    out.append(s, start, p - start);
    out += repl;
    start = p + old.size();
    ++done;
    if (out.size() > (64u << 20)) Fail("replace result too large");
  }
  out.append(s, start, std::string::npos);
  return out;
}

void AddBuiltinGlobals(Scope& scope) {
  scope.Set("range", Value::Callable("range", [](Interpreter& in, CallArgs& a) {
              if (a.args.empty()) Fail("range expected at least 1 argument, got 0");
              int64_t start = 0, stop, step = 1;
              if (a.args.size() == 1) {
                stop = RequireInt(a.args[0], "range");
              } else {
                start = RequireInt(a.args[0], "range");
                stop = RequireInt(a.args[1], "range");
                if (a.args.size() > 2) step = RequireInt(a.args[2], "range");
              }
              if (step == 0) Fail("range() arg 3 must not be zero");
              // Count in floating point to avoid overflow with extreme bounds.
              double count = std::ceil((static_cast<double>(stop) - static_cast<double>(start)) /
                                       static_cast<double>(step));
              if (count > static_cast<double>(kMaxRange)) {
                Fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
              }
              std::vector<Value> items;
              for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
                items.push_back(Value::Int(i));
              }
              in.CheckListSize(items.size());
              return Value::List(std::move(items));
            }));
  scope.Set("dict", Value::Callable("dict", [](Interpreter&, CallArgs& a) {
              auto d = std::make_shared<DictData>();
              if (!a.args.empty()) {
                if (!a.args[0].is_dict()) Fail("dict(): expected a mapping");
                d->items = a.args[0].dict().items;
              }
              for (const auto& [k, v] : a.kwargs) d->Set(Value::String(k), v);
              return Value::Dict(std::move(d));
            }));
  scope.Set("namespace", Value::Callable("namespace", [](Interpreter&, CallArgs& a) {
              auto d = std::make_shared<DictData>();
              d->is_namespace = true;
              if (!a.args.empty()) {
                if (!a.args[0].is_dict()) Fail("namespace(): expected a mapping");
                d->items = a.args[0].dict().items;
              }
              for (const auto& [k, v] : a.kwargs) d->Set(Value::String(k), v);
              return Value::Dict(std::move(d));
            }));
  scope.Set("raise_exception", Value::Callable("raise_exception", [](Interpreter&, CallArgs& a) {
              throw JinjaError(JinjaError::Kind::kRaised,
                               a.Get(0, "message", Value::String("")).ToStr());
              return Value();
            }));
  scope.Set("strftime_now", Value::Callable("strftime_now", [](Interpreter& in, CallArgs& a) {
              const std::string& fmt = RequireString(a.Get(0, "format", Value()), "strftime_now");
              std::tm tm{};
              if (in.fixed_now_unix_seconds) {
                std::time_t t = static_cast<std::time_t>(*in.fixed_now_unix_seconds);
                gmtime_r(&t, &tm);
              } else {
                std::time_t t = std::time(nullptr);
                localtime_r(&t, &tm);
              }
              char buf[256];
              size_t n = std::strftime(buf, sizeof(buf), fmt.c_str(), &tm);
              return Value::String(std::string(buf, n));
            }));
}

}  // namespace cleave::jinja
