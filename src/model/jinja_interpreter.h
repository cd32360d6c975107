// Jinja interpreter: renders a parsed Template against global variables, with jinja2's scoping
// (a for-loop body is a fresh scope per iteration, if-blocks are not scopes, macros see the
// globals) and its Undefined semantics (printing or testing an undefined value is fine, using
// it in arithmetic or taking its attribute is an error).
//
// Every render is bounded: `max_steps` statements/expressions/loop iterations, `max_depth`
// nested evaluations (macro recursion included), `max_output_bytes` for the output and for any
// single string built on the way, and `max_list_items` for any list. Exceeding one throws
// JinjaError(kLimit). Not thread-safe; make one Interpreter per render.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "model/jinja_parser.h"
#include "model/jinja_value.h"

namespace cleave::jinja {

struct RenderLimits {
  int64_t max_output_bytes = 4 << 20;
  int64_t max_steps = 2'000'000;
  int64_t max_list_items = 1 << 18;  // above jinja2's sandbox MAX_RANGE (100000)
  int max_depth = 400;
};

struct CallArgs {
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;

  // Positional argument `index`, else keyword `name`, else null.
  const Value* Find(size_t index, std::string_view name) const;
  Value Get(size_t index, std::string_view name, Value fallback) const;
};

// Variables of one scope; lookups fall back to the parent.
class Scope {
 public:
  explicit Scope(Scope* parent) : parent_(parent) {}
  const Value* Lookup(const std::string& name) const;
  void Set(const std::string& name, Value value) { vars_[name] = std::move(value); }
  void Clear() { vars_.clear(); }

 private:
  Scope* parent_;
  std::unordered_map<std::string, Value> vars_;
};

class Interpreter {
 public:
  explicit Interpreter(RenderLimits limits) : limits_(limits) {}

  // Throws JinjaError.
  std::string Render(const Template& tmpl,
                     const std::vector<std::pair<std::string, Value>>& globals);

  Value Call(const Value& callee, CallArgs& args);
  // Counts one unit of work against max_steps.
  void Step() {
    if (++steps_ > limits_.max_steps) Limit("template exceeded its step budget");
  }
  // Throws if a string or list of `size` bytes/elements would exceed the output limit.
  void CheckSize(size_t size) const {
    if (size > static_cast<size_t>(limits_.max_output_bytes)) {
      Limit("template output or value exceeds " + std::to_string(limits_.max_output_bytes) +
            " bytes");
    }
  }
  void CheckListSize(size_t items) const {
    if (items > static_cast<size_t>(limits_.max_list_items)) {
      Limit("template built a list longer than " + std::to_string(limits_.max_list_items));
    }
  }
  [[noreturn]] static void Limit(const std::string& message) {
    throw JinjaError(JinjaError::Kind::kLimit, message);
  }

  // strftime_now's clock: fixed (UTC) for reproducible tests, else the local time.
  std::optional<int64_t> fixed_now_unix_seconds;

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  class DepthGuard;

  Flow Exec(const Body& body, Scope& scope, std::string& out);
  Flow ExecStmt(const Stmt& stmt, Scope& scope, std::string& out);
  Flow ExecFor(const Stmt& stmt, Scope& scope, std::string& out);
  void Assign(const Expr& target, const Value& value, Scope& scope);
  Value MakeMacro(const Stmt& stmt);
  Value ApplyFilterChain(const Expr* chain, Value operand, Scope& scope);

  Value Eval(const Expr& e, Scope& scope);
  Value EvalBinary(const Expr& e, Scope& scope);
  bool EvalCompare(const Expr& e, Scope& scope);
  Value EvalSlice(const Expr& e, Scope& scope);
  CallArgs EvalArgs(const Expr& e, size_t first_arg, Scope& scope);
  void Append(std::string& out, std::string_view text);

  RenderLimits limits_;
  int64_t steps_ = 0;
  int depth_ = 0;
  Scope* root_ = nullptr;
};

}  // namespace cleave::jinja
