// Jinja parser: tokens -> AST, following jinja2's grammar and operator precedence (lowest first):
//   a if c else b | or | and | not | comparisons (== != < <= > >= in, not in; chained)
//   | + - | ~ | * / // % | ** (left-assoc, as in jinja2) | unary - + | postfix .x [i] [a:b:c] (...)
//   then filters `|f(...)` and tests `is [not] t(...)`.
// Statements: if/elif/else, for (tuple targets, `if` filter, else), set (incl. tuple targets,
// `ns.attr`, block form), macro, filter blocks, break/continue, generation (HF's marker tag).
// Nesting is bounded so that a hostile template cannot exhaust the stack.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/jinja_value.h"

namespace cleave::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind {
  kLiteral,  // literal
  kName,     // name
  kList,     // children: elements
  kTuple,    // children: elements
  kDict,     // children: key0, value0, key1, value1 ...
  kGetAttr,  // children[0].name
  kGetItem,  // children[0][children[1]]
  kSlice,    // children[0][children[1]:children[2]:children[3]] (missing parts are null)
  kCall,     // children[0](children[1..], kwargs)
  kFilter,   // children[0] | name(children[1..], kwargs); children[0] null in filter blocks
  kTest,     // children[0] is [not] name(children[1..], kwargs)
  kUnary,    // name children[0]; name is "-" or "+"
  kBinary,   // children[0] name children[1]; name is + - * / // % ** ~
  kCompare,  // children[0] ops[0] children[1] ops[1] children[2] ...
  kAnd,
  kOr,
  kNot,
  kCondition,  // children[0] if children[1] else children[2] (children[2] may be null)
};

struct Expr {
  ExprKind kind = ExprKind::kLiteral;
  int line = 0;
  int column = 0;
  Value literal;
  std::string name;
  bool negated = false;  // kTest
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;  // kCompare: "==", "!=", "<", "<=", ">", ">=", "in", "notin"
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

enum class StmtKind {
  kText,         // text
  kOutput,       // {{ expr }}
  kIf,           // branches
  kFor,          // for targets in expr [if filter] body [else else_body]
  kSet,          // set target = expr
  kSetBlock,     // set name [| filters] body endset (expr: the filter chain, may be null)
  kMacro,        // macro name(params) body
  kFilterBlock,  // filter chain (expr) body
  kBreak,
  kContinue,
  kScope,  // a body rendered in place ({% generation %})
};

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // null: required
};

struct Stmt {
  StmtKind kind = StmtKind::kText;
  int line = 0;
  int column = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr target;  // kFor / kSet: a kName, a kTuple of kName, or (kSet) a kGetAttr on a kName
  ExprPtr filter;  // kFor: optional `if` condition
  std::vector<std::pair<ExprPtr, Body>> branches;  // kIf: (condition, body); else: null condition
  std::string name;                                // kMacro / kSetBlock
  std::vector<MacroParam> params;
  Body body;
  Body else_body;
};

struct Template {
  Body body;
};

// Throws JinjaError ("line L, column C: ...") on syntax errors.
Template ParseTemplate(std::string_view source);

}  // namespace cleave::jinja
