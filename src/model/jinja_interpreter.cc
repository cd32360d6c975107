#include "model/jinja_interpreter.h"

#include <cmath>

#include "model/jinja_builtins.h"

namespace cleave::jinja {

class Interpreter::DepthGuard {
 public:
  explicit DepthGuard(Interpreter& in) : in_(in) {
    if (++in_.depth_ > in_.limits_.max_depth) Limit("template recursion too deep");
  }
  ~DepthGuard() { --in_.depth_; }

 private:
  Interpreter& in_;
};

const Value* CallArgs::Find(size_t index, std::string_view name) const {
  if (index < args.size()) return &args[index];
  for (const auto& [key, value] : kwargs) {
    if (key == name) return &value;
  }
  return nullptr;
}

Value CallArgs::Get(size_t index, std::string_view name, Value fallback) const {
  const Value* v = Find(index, name);
  return v != nullptr ? *v : std::move(fallback);
}

const Value* Scope::Lookup(const std::string& name) const {
  for (const Scope* s = this; s != nullptr; s = s->parent_) {
    auto it = s->vars_.find(name);
    if (it != s->vars_.end()) return &it->second;
  }
  return nullptr;
}

std::string Interpreter::Render(const Template& tmpl,
                                const std::vector<std::pair<std::string, Value>>& globals) {
  RenderArena arena;  // declared first: breaks reference cycles after everything else is gone
  Scope root(nullptr);
  AddBuiltinGlobals(root);
  for (const auto& [name, value] : globals) root.Set(name, value);
  root_ = &root;
  std::string out;
  Exec(tmpl.body, root, out);
  root_ = nullptr;
  return out;
}

void Interpreter::Append(std::string& out, std::string_view text) {
  CheckSize(out.size() + text.size());
  out.append(text);
}

Interpreter::Flow Interpreter::Exec(const Body& body, Scope& scope, std::string& out) {
  for (const auto& stmt : body) {
    Flow flow = ExecStmt(*stmt, scope, out);
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::ExecStmt(const Stmt& stmt, Scope& scope, std::string& out) {
  Step();
  DepthGuard guard(*this);
  try {
    switch (stmt.kind) {
      case StmtKind::kText:
        Append(out, stmt.text);
        break;
      case StmtKind::kOutput:
        Append(out, Eval(*stmt.expr, scope).ToStr());
        break;
      case StmtKind::kIf:
        for (const auto& [cond, body] : stmt.branches) {
          if (cond == nullptr || Eval(*cond, scope).Truthy()) return Exec(body, scope, out);
        }
        break;
      case StmtKind::kFor:
        return ExecFor(stmt, scope, out);
      case StmtKind::kSet:
        Assign(*stmt.target, Eval(*stmt.expr, scope), scope);
        break;
      case StmtKind::kSetBlock: {
        std::string rendered;
        Exec(stmt.body, scope, rendered);
        scope.Set(stmt.name, ApplyFilterChain(stmt.expr.get(), Value::String(rendered), scope));
        break;
      }
      case StmtKind::kMacro:
        scope.Set(stmt.name, MakeMacro(stmt));
        break;
      case StmtKind::kFilterBlock: {
        std::string rendered;
        Exec(stmt.body, scope, rendered);
        Append(out, ApplyFilterChain(stmt.expr.get(), Value::String(rendered), scope).ToStr());
        break;
      }
      case StmtKind::kBreak:
        return Flow::kBreak;
      case StmtKind::kContinue:
        return Flow::kContinue;
      case StmtKind::kScope:
        return Exec(stmt.body, scope, out);
    }
  } catch (const JinjaError& e) {
    // Locate template errors once, at the innermost statement; raise_exception messages and
    // limit errors pass through unchanged.
    std::string_view msg = e.what();
    if (e.kind() == JinjaError::Kind::kTemplate && msg.rfind("line ", 0) != 0) {
      throw JinjaError(e.kind(), "line " + std::to_string(stmt.line) + ": " + std::string(msg));
    }
    throw;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::ExecFor(const Stmt& stmt, Scope& scope, std::string& out) {
  Value iterable = Eval(*stmt.expr, scope);
  std::vector<Value> storage;
  const std::vector<Value>* items = &storage;
  if (iterable.is_list()) {
    items = &iterable.items();  // lists are immutable: iterate in place
  } else {
    storage = Iterate(iterable);
  }
  if (stmt.filter != nullptr) {
    std::vector<Value> kept;
    Scope filter_scope(&scope);
    for (const auto& item : *items) {
      Step();
      filter_scope.Clear();
      Assign(*stmt.target, item, filter_scope);
      if (Eval(*stmt.filter, filter_scope).Truthy()) kept.push_back(item);
    }
    storage = std::move(kept);
    items = &storage;
  }
  if (items->empty()) {
    return Exec(stmt.else_body, scope, out) == Flow::kBreak ? Flow::kBreak : Flow::kNormal;
  }
  // One `loop` object per loop, advanced in place each iteration (like jinja2's LoopContext).
  enum Field {
    kIndex,
    kIndex0,
    kRevindex,
    kRevindex0,
    kFirst,
    kLast,
    kLength,
    kPrevitem,
    kNextitem,
    kDepth,
    kDepth0,
    kCycle,
    kNumFields
  };
  static const char* const kNames[kNumFields] = {"index",    "index0", "revindex", "revindex0",
                                                 "first",    "last",   "length",   "previtem",
                                                 "nextitem", "depth",  "depth0",   "cycle"};
  static const std::vector<Value>* const kKeys = [] {
    auto* keys = new std::vector<Value>();
    for (const char* name : kNames) keys->push_back(Value::String(name));
    return keys;
  }();
  const int64_t n = static_cast<int64_t>(items->size());
  auto position = std::make_shared<int64_t>(0);
  auto loop = std::make_shared<DictData>();
  loop->items.resize(kNumFields);
  for (int f = 0; f < kNumFields; ++f) loop->items[f].first = (*kKeys)[f];
  loop->items[kLength].second = Value::Int(n);
  loop->items[kDepth].second = Value::Int(1);
  loop->items[kDepth0].second = Value::Int(0);
  loop->items[kCycle].second = Value::Callable("cycle", [position](Interpreter&, CallArgs& args) {
    if (args.args.empty()) Fail("no items for cycling given");
    return args.args[static_cast<size_t>(*position) % args.args.size()];
  });
  Value loop_value = Value::Dict(loop);
  Scope iter_scope(&scope);
  for (int64_t i = 0; i < n; ++i) {
    Step();
    *position = i;
    auto& f = loop->items;
    f[kIndex].second = Value::Int(i + 1);
    f[kIndex0].second = Value::Int(i);
    f[kRevindex].second = Value::Int(n - i);
    f[kRevindex0].second = Value::Int(n - i - 1);
    f[kFirst].second = Value::Bool(i == 0);
    f[kLast].second = Value::Bool(i == n - 1);
    f[kPrevitem].second = i > 0 ? (*items)[static_cast<size_t>(i - 1)] : Value();
    f[kNextitem].second = i + 1 < n ? (*items)[static_cast<size_t>(i + 1)] : Value();
    iter_scope.Clear();  // each iteration starts from the enclosing scope's variables
    Assign(*stmt.target, (*items)[static_cast<size_t>(i)], iter_scope);
    iter_scope.Set("loop", loop_value);
    if (Exec(stmt.body, iter_scope, out) == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

void Interpreter::Assign(const Expr& target, const Value& value, Scope& scope) {
  switch (target.kind) {
    case ExprKind::kName:
      scope.Set(target.name, value);
      return;
    case ExprKind::kTuple: {
      if (!value.is_list()) Fail("cannot unpack non-sequence " + value.TypeName());
      const auto& items = value.items();
      if (items.size() != target.children.size()) {
        Fail(items.size() > target.children.size() ? "too many values to unpack"
                                                   : "not enough values to unpack");
      }
      for (size_t i = 0; i < items.size(); ++i) Assign(*target.children[i], items[i], scope);
      return;
    }
    case ExprKind::kGetAttr: {
      const Value* ns = scope.Lookup(target.children[0]->name);
      if (ns == nullptr || !ns->is_dict() || !ns->dict().is_namespace) {
        Fail("can only assign attributes of namespace objects");
      }
      ns->mutable_dict().Set(Value::String(target.name), value);
      return;
    }
    default:
      Fail("invalid assignment target");
  }
}

Value Interpreter::MakeMacro(const Stmt& stmt) {
  const Stmt* macro = &stmt;
  return Value::Callable(stmt.name, [macro](Interpreter& in, CallArgs& args) {
    DepthGuard guard(in);
    Scope scope(in.root_);
    size_t used_positional = 0;
    for (size_t i = 0; i < macro->params.size(); ++i) {
      const MacroParam& p = macro->params[i];
      const Value* v = args.Find(i, p.name);
      if (i < args.args.size()) ++used_positional;
      if (v != nullptr) {
        scope.Set(p.name, *v);
      } else if (p.default_value != nullptr) {
        scope.Set(p.name, in.Eval(*p.default_value, scope));
      } else {
        scope.Set(p.name, Value::Undefined("parameter '" + p.name + "' was not provided"));
      }
    }
    std::vector<Value> extra(args.args.begin() + static_cast<std::ptrdiff_t>(used_positional),
                             args.args.end());
    scope.Set("varargs", Value::List(std::move(extra)));
    auto kwargs = std::make_shared<DictData>();
    for (const auto& [key, value] : args.kwargs) {
      bool is_param = false;
      for (const auto& p : macro->params) is_param = is_param || p.name == key;
      if (!is_param) kwargs->items.emplace_back(Value::String(key), value);
    }
    scope.Set("kwargs", Value::Dict(std::move(kwargs)));
    std::string out;
    in.Exec(macro->body, scope, out);
    return Value::String(std::move(out));
  });
}

Value Interpreter::ApplyFilterChain(const Expr* chain, Value operand, Scope& scope) {
  if (chain == nullptr) return operand;
  Value inner = ApplyFilterChain(chain->children[0].get(), std::move(operand), scope);
  CallArgs args = EvalArgs(*chain, 1, scope);
  return ApplyFilter(*this, chain->name, inner, args);
}

Value Interpreter::Call(const Value& callee, CallArgs& args) {
  if (callee.is_undefined()) Fail(UndefinedMessage(callee));
  if (!callee.is_callable()) Fail("'" + callee.TypeName() + "' object is not callable");
  return callee.callable().fn(*this, args);
}

CallArgs Interpreter::EvalArgs(const Expr& e, size_t first_arg, Scope& scope) {
  CallArgs args;
  for (size_t i = first_arg; i < e.children.size(); ++i) {
    args.args.push_back(Eval(*e.children[i], scope));
  }
  for (const auto& [key, expr] : e.kwargs) args.kwargs.emplace_back(key, Eval(*expr, scope));
  return args;
}

Value Interpreter::Eval(const Expr& e, Scope& scope) {
  Step();
  DepthGuard guard(*this);
  switch (e.kind) {
    case ExprKind::kLiteral:
      return e.literal;
    case ExprKind::kName: {
      const Value* v = scope.Lookup(e.name);
      return v != nullptr ? *v : Value::Undefined("'" + e.name + "' is undefined");
    }
    case ExprKind::kList:
    case ExprKind::kTuple: {
      std::vector<Value> items;
      items.reserve(e.children.size());
      for (const auto& c : e.children) items.push_back(Eval(*c, scope));
      return Value::List(std::move(items), e.kind == ExprKind::kTuple);
    }
    case ExprKind::kDict: {
      auto dict = std::make_shared<DictData>();
      for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
        Value key = Eval(*e.children[i], scope);
        dict->Set(key, Eval(*e.children[i + 1], scope));
      }
      return Value::Dict(std::move(dict));
    }
    case ExprKind::kGetAttr:
      return GetAttr(*this, Eval(*e.children[0], scope), e.name);
    case ExprKind::kGetItem:
      return GetItem(*this, Eval(*e.children[0], scope), Eval(*e.children[1], scope));
    case ExprKind::kSlice:
      return EvalSlice(e, scope);
    case ExprKind::kCall: {
      Value callee = Eval(*e.children[0], scope);
      CallArgs args = EvalArgs(e, 1, scope);
      return Call(callee, args);
    }
    case ExprKind::kFilter: {
      Value operand = Eval(*e.children[0], scope);
      CallArgs args = EvalArgs(e, 1, scope);
      return ApplyFilter(*this, e.name, operand, args);
    }
    case ExprKind::kTest: {
      Value operand = Eval(*e.children[0], scope);
      CallArgs args = EvalArgs(e, 1, scope);
      return Value::Bool(ApplyTest(*this, e.name, operand, args) != e.negated);
    }
    case ExprKind::kUnary: {
      Value v = Eval(*e.children[0], scope);
      if (v.is_undefined()) Fail(UndefinedMessage(v));
      if (!v.is_number()) Fail("bad operand type for unary " + e.name + ": '" + v.TypeName() + "'");
      if (e.name == "+") return v.is_float() ? v : Value::Int(v.int_value());
      if (v.is_float()) return Value::Float(-v.AsDouble());
      if (v.int_value() == INT64_MIN) Fail("integer overflow");
      return Value::Int(-v.int_value());
    }
    case ExprKind::kBinary:
      return EvalBinary(e, scope);
    case ExprKind::kCompare:
      return Value::Bool(EvalCompare(e, scope));
    case ExprKind::kAnd: {
      Value left = Eval(*e.children[0], scope);
      return left.Truthy() ? Eval(*e.children[1], scope) : left;
    }
    case ExprKind::kOr: {
      Value left = Eval(*e.children[0], scope);
      return left.Truthy() ? left : Eval(*e.children[1], scope);
    }
    case ExprKind::kNot:
      return Value::Bool(!Eval(*e.children[0], scope).Truthy());
    case ExprKind::kCondition: {
      if (Eval(*e.children[1], scope).Truthy()) return Eval(*e.children[0], scope);
      if (e.children[2] == nullptr) return Value::Undefined("the inline if-expression had no else");
      return Eval(*e.children[2], scope);
    }
  }
  Fail("unsupported expression");
}

Value Interpreter::EvalBinary(const Expr& e, Scope& scope) {
  Value left = Eval(*e.children[0], scope);
  Value right = Eval(*e.children[1], scope);
  if (e.name == "~") {
    std::string s = left.ToStr();
    std::string r = right.ToStr();
    CheckSize(s.size() + r.size());
    return Value::String(s + r);
  }
  return BinaryOp(*this, e.name, left, right);
}

bool Interpreter::EvalCompare(const Expr& e, Scope& scope) {
  Value left = Eval(*e.children[0], scope);
  for (size_t i = 0; i < e.ops.size(); ++i) {
    Value right = Eval(*e.children[i + 1], scope);
    const std::string& op = e.ops[i];
    bool result;
    if (op == "==") {
      result = left.Equals(right);
    } else if (op == "!=") {
      result = !left.Equals(right);
    } else if (op == "in" || op == "notin") {
      result = Contains(right, left) == (op == "in");
    } else {
      if (left.is_undefined() || right.is_undefined()) {
        Fail(UndefinedMessage(left.is_undefined() ? left : right));
      }
      int c = left.Compare(right);
      result = op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0;
    }
    if (!result) return false;
    left = std::move(right);
  }
  return true;
}

Value Interpreter::EvalSlice(const Expr& e, Scope& scope) {
  if (e.children.size() != 4) Fail("slices are only supported as the sole subscript");
  Value obj = Eval(*e.children[0], scope);
  std::optional<int64_t> parts[3];
  for (int i = 0; i < 3; ++i) {
    if (e.children[static_cast<size_t>(i) + 1] == nullptr) continue;
    Value v = Eval(*e.children[static_cast<size_t>(i) + 1], scope);
    if (v.is_none()) continue;
    if (!v.is_int() && !v.is_bool()) Fail("slice indices must be integers or None");
    parts[i] = v.int_value();
  }
  return SliceValue(obj, parts[0], parts[1], parts[2]);
}

}  // namespace cleave::jinja
