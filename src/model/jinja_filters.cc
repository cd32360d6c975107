// jinja2's built-in filters and tests that chat templates use, plus HF's `tojson` override
// (json.dumps with ensure_ascii=False, so no HTML escaping).
#include <algorithm>
#include <cerrno>
#include <cfenv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "model/jinja_builtins.h"

namespace cleave::jinja {
namespace {

// jinja2's make_attrgetter: "a.b.0" looks up each part with getitem (item, then attribute).
Value GetPath(Interpreter& in, Value v, const Value& path) {
  if (!path.is_string()) return GetItem(in, v, path);
  const std::string& p = path.str();
  size_t start = 0;
  while (true) {
    size_t dot = p.find('.', start);
    std::string part = p.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    v = GetItem(in, v, numeric ? Value::Int(std::stoll(part)) : Value::String(part));
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

Value SortKey(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value::String(PyLower(v.str()));
  return v;
}

CallArgs Rest(const CallArgs& args, size_t from) {
  CallArgs rest;
  if (from < args.args.size())
    rest.args.assign(args.args.begin() + static_cast<std::ptrdiff_t>(from), args.args.end());
  rest.kwargs = args.kwargs;
  return rest;
}

std::string RequireTestName(const Value& v) {
  if (!v.is_string()) Fail("test name must be a string");
  return v.str();
}

// select/reject/selectattr/rejectattr.
Value SelectOrReject(Interpreter& in, const Value& seq, CallArgs& args, bool attr, bool select) {
  size_t next = 0;
  Value attribute;
  if (attr) {
    if (args.args.empty()) Fail("selectattr/rejectattr: missing attribute");
    attribute = args.args[next++];
  }
  std::string test;
  if (next < args.args.size()) test = RequireTestName(args.args[next++]);
  CallArgs test_args = Rest(args, next);
  test_args.kwargs.clear();
  std::vector<Value> out;
  for (const auto& item : Iterate(seq)) {
    in.Step();
    Value v = attr ? GetPath(in, item, attribute) : item;
    bool ok = test.empty() ? v.Truthy() : ApplyTest(in, test, v, test_args);
    if (ok == select) out.push_back(item);
  }
  return Value::List(std::move(out));
}

double RoundHalfEven(double x, int64_t digits) {
  if (digits == 0) {
    std::fesetround(FE_TONEAREST);
    return std::nearbyint(x);
  }
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(std::clamp<int64_t>(digits, 0, 300)), x);
  return std::strtod(buf, nullptr);
}

Value ToInt(const Value& v, const Value& dflt) {
  if (v.is_int() || v.is_bool()) return Value::Int(v.int_value());
  if (v.is_float()) {
    double d = v.AsDouble();
    if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) return dflt;
    return Value::Int(static_cast<int64_t>(d));
  }
  if (v.is_string()) {
    std::string s = PyStrip(v.str(), Value::None(), true, true);
    if (s.empty()) return dflt;
    char* end = nullptr;
    errno = 0;
    long long i = std::strtoll(s.c_str(), &end, 10);
    if (errno == 0 && end == s.c_str() + s.size()) return Value::Int(i);
    double d = std::strtod(s.c_str(), &end);
    if (end == s.c_str() + s.size() && std::isfinite(d) && std::fabs(d) < 9.2e18) {
      return Value::Int(static_cast<int64_t>(d));
    }
  }
  return dflt;
}

Value ToFloat(const Value& v, const Value& dflt) {
  if (v.is_number()) return Value::Float(v.AsDouble());
  if (v.is_string()) {
    std::string s = PyStrip(v.str(), Value::None(), true, true);
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end == s.c_str() + s.size()) return Value::Float(d);
  }
  return dflt;
}

std::string Indent(const std::string& s, const Value& width, bool first, bool blank) {
  std::string indention =
      width.is_string()
          ? width.str()
          : std::string(static_cast<size_t>(std::max<int64_t>(0, width.int_value())), ' ');
  std::vector<std::string> lines;
  std::string text = s + "\n";
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n' || text[i] == '\r') {
      lines.push_back(text.substr(start, i - start));
      if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      start = i + 1;
    }
  }
  std::string rv;
  if (blank) {
    for (size_t i = 0; i < lines.size(); ++i) rv += (i ? "\n" + indention : "") + lines[i];
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) {
      rv += "\n" + (lines[i].empty() ? "" : indention + lines[i]);
    }
  }
  return first ? indention + rv : rv;
}

std::string JinjaTitle(const std::string& s) {
  // jinja2's do_title: capitalize each piece after a run of [-\s({\[<].
  std::string out;
  bool word_start = true;
  for (char c : s) {
    bool sep = c == '-' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
               c == '\v' || c == '(' || c == '{' || c == '[' || c == '<';
    if (sep) {
      out.push_back(c);
      word_start = true;
    } else {
      out.push_back(word_start ? static_cast<char>(std::toupper(static_cast<unsigned char>(c)))
                               : static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
      word_start = false;
    }
  }
  return out;
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

std::string EscapeNonAscii(const std::string& json) {
  std::string out;
  for (uint32_t cp : Utf8Decode(json)) {
    char buf[16];
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x10000) {
      std::snprintf(buf, sizeof(buf), "\\u%04x", cp);
      out += buf;
    } else {
      uint32_t v = cp - 0x10000;
      std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
      out += buf;
    }
  }
  return out;
}

}  // namespace

Value ApplyFilter(Interpreter& in, const std::string& name, const Value& v, CallArgs& a) {
  if (name == "trim")
    return Value::String(PyStrip(v.ToStr(), a.Get(0, "chars", Value::None()), true, true));
  if (name == "length" || name == "count") return Value::Int(v.Length());
  if (name == "string") return Value::String(v.ToStr());
  if (name == "safe") return v.is_string() ? v : Value::String(v.ToStr());
  if (name == "lower") return Value::String(PyLower(v.ToStr()));
  if (name == "upper") return Value::String(PyUpper(v.ToStr()));
  if (name == "title") return Value::String(JinjaTitle(v.ToStr()));
  if (name == "capitalize") {
    std::string s = PyLower(v.ToStr());
    if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
    return Value::String(s);
  }
  if (name == "escape" || name == "e") return Value::String(HtmlEscape(v.ToStr()));
  if (name == "default" || name == "d") {
    bool boolean = a.Get(1, "boolean", Value::Bool(false)).Truthy();
    if (v.is_undefined() || (boolean && !v.Truthy()))
      return a.Get(0, "default_value", Value::String(""));
    return v;
  }
  if (name == "tojson") {
    Value indent = a.Get(0, "indent", Value::None());
    if (!indent.is_none() && !indent.is_int()) Fail("tojson: indent must be an integer");
    std::string out = v.ToJson(
        indent.is_none() ? -1 : static_cast<int>(std::clamp<int64_t>(indent.int_value(), 0, 64)),
        a.Get(SIZE_MAX, "sort_keys", Value::Bool(false)).Truthy());
    if (a.Get(SIZE_MAX, "ensure_ascii", Value::Bool(false)).Truthy()) out = EscapeNonAscii(out);
    in.CheckSize(out.size());
    return Value::String(std::move(out));
  }
  if (name == "int") return ToInt(v, a.Get(0, "default", Value::Int(0)));
  if (name == "float") return ToFloat(v, a.Get(0, "default", Value::Float(0.0)));
  if (name == "abs") {
    if (v.is_float()) return Value::Float(std::fabs(v.AsDouble()));
    if (!v.is_number()) Fail("bad operand type for abs(): '" + v.TypeName() + "'");
    if (v.int_value() == INT64_MIN) Fail("integer overflow");
    return Value::Int(std::llabs(v.int_value()));
  }
  if (name == "round") {
    int64_t precision = a.Get(0, "precision", Value::Int(0)).int_value();
    std::string method = a.Get(1, "method", Value::String("common")).ToStr();
    if (!v.is_number()) Fail("round: expected a number");
    double x = v.AsDouble();
    if (method == "common") return Value::Float(RoundHalfEven(x, precision));
    double scale = std::pow(10.0, static_cast<double>(precision));
    if (method == "ceil") return Value::Float(std::ceil(x * scale) / scale);
    if (method == "floor") return Value::Float(std::floor(x * scale) / scale);
    Fail("method must be common, ceil or floor");
  }
  if (name == "replace") {
    std::string s = v.ToStr();
    Value count = a.Get(2, "count", Value::None());
    std::string out =
        PyReplace(s, a.Get(0, "old", Value()).ToStr(), a.Get(1, "new", Value()).ToStr(),
                  count.is_none() ? -1 : count.int_value());
    in.CheckSize(out.size());
    return Value::String(std::move(out));
  }
  if (name == "join") {
    std::string sep = a.Get(0, "d", Value::String("")).ToStr();
    Value attribute = a.Get(1, "attribute", Value::None());
    std::string out;
    bool first = true;
    for (const auto& item : Iterate(v)) {
      if (!first) out += sep;
      first = false;
      out += (attribute.is_none() ? item : GetPath(in, item, attribute)).ToStr();
      in.CheckSize(out.size());
    }
    return Value::String(std::move(out));
  }
  if (name == "first" || name == "last") {
    std::vector<Value> items = Iterate(v);
    if (items.empty()) return Value::Undefined("No " + name + " item, sequence was empty.");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return Value::List(Iterate(v));
  if (name == "items") {
    if (v.is_undefined()) return Value::List({});
    if (!v.is_dict()) Fail("Can only get item pairs from a mapping.");
    std::vector<Value> out;
    for (const auto& [k, val] : v.dict().items) out.push_back(Value::List({k, val}, true));
    return Value::List(std::move(out));
  }
  if (name == "reverse") {
    if (v.is_string()) return SliceValue(v, std::nullopt, std::nullopt, -1);
    std::vector<Value> items = Iterate(v);
    std::reverse(items.begin(), items.end());
    return Value::List(std::move(items));
  }
  if (name == "select" || name == "reject")
    return SelectOrReject(in, v, a, false, name == "select");
  if (name == "selectattr" || name == "rejectattr") {
    return SelectOrReject(in, v, a, true, name == "selectattr");
  }
  if (name == "map") {
    std::vector<Value> out;
    const Value* attribute = a.Find(SIZE_MAX, "attribute");
    for (const auto& item : Iterate(v)) {
      in.Step();
      if (attribute != nullptr) {
        Value x = GetPath(in, item, *attribute);
        if (x.is_undefined()) x = a.Get(SIZE_MAX, "default", x);
        out.push_back(x);
      } else {
        if (a.args.empty()) Fail("map: missing filter name");
        CallArgs rest = Rest(a, 1);
        out.push_back(ApplyFilter(in, a.args[0].ToStr(), item, rest));
      }
    }
    return Value::List(std::move(out));
  }
  if (name == "unique") {
    bool case_sensitive = a.Get(0, "case_sensitive", Value::Bool(false)).Truthy();
    Value attribute = a.Get(1, "attribute", Value::None());
    std::vector<Value> out, seen;
    for (const auto& item : Iterate(v)) {
      in.Step();
      Value key =
          SortKey(attribute.is_none() ? item : GetPath(in, item, attribute), case_sensitive);
      if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return s.Equals(key); })) {
        seen.push_back(key);
        out.push_back(item);
      }
    }
    return Value::List(std::move(out));
  }
  if (name == "sort" || name == "dictsort" || name == "min" || name == "max") {
    bool dictsort = name == "dictsort";
    bool reverse = a.Get(dictsort ? 3 : 0, "reverse", Value::Bool(false)).Truthy();
    bool case_sensitive =
        a.Get(dictsort ? 0 : (name == "sort" ? 1 : 0), "case_sensitive", Value::Bool(false))
            .Truthy();
    Value attribute =
        dictsort ? Value::None() : a.Get(name == "sort" ? 2 : 1, "attribute", Value::None());
    std::vector<Value> items;
    int by_value = 0;
    if (dictsort) {
      if (!v.is_dict()) Fail("dictsort: expected a mapping");
      for (const auto& [k, val] : v.dict().items) items.push_back(Value::List({k, val}, true));
      by_value = a.Get(1, "by", Value::String("key")).ToStr() == "value" ? 1 : 0;
    } else {
      items = Iterate(v);
    }
    auto key_of = [&](const Value& item) {
      Value k = dictsort ? item.items()[static_cast<size_t>(by_value)]
                         : (attribute.is_none() ? item : GetPath(in, item, attribute));
      return SortKey(k, case_sensitive);
    };
    in.CheckListSize(items.size());
    std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
      return reverse ? key_of(y).Compare(key_of(x)) < 0 : key_of(x).Compare(key_of(y)) < 0;
    });
    if (name == "min" || name == "max") {
      if (items.empty()) return Value::Undefined("No aggregated item, sequence was empty.");
      return name == "min" ? items.front() : items.back();
    }
    return Value::List(std::move(items));
  }
  if (name == "sum") {
    Value attribute = a.Get(0, "attribute", Value::None());
    Value total = a.Get(1, "start", Value::Int(0));
    for (const auto& item : Iterate(v)) {
      total = BinaryOp(in, "+", total, attribute.is_none() ? item : GetPath(in, item, attribute));
    }
    return total;
  }
  if (name == "indent") {
    std::string out = Indent(v.ToStr(), a.Get(0, "width", Value::Int(4)),
                             a.Get(1, "first", Value::Bool(false)).Truthy(),
                             a.Get(2, "blank", Value::Bool(false)).Truthy());
    in.CheckSize(out.size());
    return Value::String(std::move(out));
  }
  if (name == "wordcount") {
    int64_t n = 0;
    bool in_word = false;
    for (unsigned char c : v.ToStr()) {
      bool word = std::isalnum(c) || c == '_' || c >= 0x80;
      if (word && !in_word) ++n;
      in_word = word;
    }
    return Value::Int(n);
  }
  if (name == "format") {
    Value args = Value::List(a.args, /*is_tuple=*/true);
    return BinaryOp(in, "%", Value::String(v.ToStr()), args);
  }
  if (name == "attr") return GetAttr(in, v, a.Get(0, "name", Value::String("")).ToStr());
  if (name == "center") {
    std::string s = v.ToStr();
    int64_t width = a.Get(0, "width", Value::Int(80)).int_value();
    int64_t len = Utf8Length(s);
    if (width <= len) return Value::String(s);
    in.CheckSize(static_cast<size_t>(width));
    int64_t total = width - len, left = total / 2 + (total & width & 1);
    return Value::String(std::string(static_cast<size_t>(left), ' ') + s +
                         std::string(static_cast<size_t>(total - left), ' '));
  }
  Fail("No filter named '" + name + "'.");
}

bool ApplyTest(Interpreter& in, const std::string& name, const Value& v, CallArgs& a) {
  auto arg = [&]() { return a.Get(0, "other", Value()); };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.bool_value();
  if (name == "false") return v.is_bool() && !v.bool_value();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict() && !v.dict().is_namespace;
  if (name == "iterable" || name == "sequence") {
    return v.is_string() || v.is_list() || (v.is_dict() && !v.dict().is_namespace) ||
           v.is_undefined();
  }
  if (name == "callable") return v.is_callable();
  if (name == "eq" || name == "equalto" || name == "==") return v.Equals(arg());
  if (name == "ne" || name == "!=") return !v.Equals(arg());
  if (name == "lt" || name == "lessthan" || name == "<") return v.Compare(arg()) < 0;
  if (name == "le" || name == "<=") return v.Compare(arg()) <= 0;
  if (name == "gt" || name == "greaterthan" || name == ">") return v.Compare(arg()) > 0;
  if (name == "ge" || name == ">=") return v.Compare(arg()) >= 0;
  if (name == "in") return Contains(a.Get(0, "seq", Value()), v);
  if (name == "sameas") {
    Value other = arg();
    if (v.kind() != other.kind()) return false;
    if (v.is_list() || v.is_dict()) return v.Equals(other) && v.ToRepr() == other.ToRepr();
    return v.Equals(other);
  }
  if (name == "divisibleby" || name == "even" || name == "odd") {
    if (!v.is_int() && !v.is_bool()) Fail("'" + name + "' test needs an integer");
    int64_t x = v.int_value();
    if (name == "even") return x % 2 == 0;
    if (name == "odd") return x % 2 != 0;
    int64_t d = a.Get(0, "num", Value::Int(1)).int_value();
    if (d == 0) Fail("integer modulo by zero");
    return x % d == 0;
  }
  if (name == "lower") return v.is_string() && PyLower(v.str()) == v.str();
  if (name == "upper") return v.is_string() && PyUpper(v.str()) == v.str();
  if (name == "escaped") return false;
  (void)in;
  Fail("No test named '" + name + "'.");
}

}  // namespace cleave::jinja
