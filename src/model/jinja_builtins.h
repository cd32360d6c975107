// The parts of Python and jinja2 that templates call into: operators, attribute and item access
// (with jinja2's sandboxed getattr/getitem fallbacks), str/dict/list methods, the global
// functions (range, dict, namespace, raise_exception, strftime_now), filters and tests.
// All throw JinjaError on misuse, with messages close to jinja2's.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/jinja_interpreter.h"
#include "model/jinja_value.h"

namespace cleave::jinja {

void AddBuiltinGlobals(Scope& scope);

// The message a use of an undefined value raises ("'x' is undefined").
std::string UndefinedMessage(const Value& undefined);
// Elements a for-loop visits: list items, dict keys, string characters; undefined is empty.
std::vector<Value> Iterate(const Value& value);
// Python `item in container`.
bool Contains(const Value& container, const Value& item);
// + - * / // % ** on numbers, strings and lists.
Value BinaryOp(Interpreter& in, const std::string& op, const Value& left, const Value& right);

// `obj.name`: Python attribute (bound str/dict/list methods) first, then obj["name"].
Value GetAttr(Interpreter& in, const Value& obj, const std::string& name);
// `obj[key]`: item first, then (for string keys) the attribute.
Value GetItem(Interpreter& in, const Value& obj, const Value& key);
Value SliceValue(const Value& obj, std::optional<int64_t> start, std::optional<int64_t> stop,
                 std::optional<int64_t> step);

Value ApplyFilter(Interpreter& in, const std::string& name, const Value& operand, CallArgs& args);
bool ApplyTest(Interpreter& in, const std::string& name, const Value& operand, CallArgs& args);

// Python text helpers shared by methods and filters.
std::string PyStrip(const std::string& s, const Value& chars, bool left, bool right);
std::string PyLower(std::string s);
std::string PyUpper(std::string s);
std::string PyReplace(const std::string& s, const std::string& old, const std::string& repl,
                      int64_t count);

}  // namespace cleave::jinja
