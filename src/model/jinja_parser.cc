#include "model/jinja_parser.h"

#include <algorithm>
#include <initializer_list>

#include "model/jinja_lexer.h"

namespace cleave::jinja {
namespace {

// Deep enough for any real template, shallow enough that recursion stays far from the stack end.
constexpr int kMaxNesting = 100;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  Template Run() {
    Template t;
    std::string end;
    t.body = ParseBody({}, &end);
    return t;
  }

 private:
  class DepthGuard {
   public:
    DepthGuard(Parser& p) : p_(p) {
      if (++p_.depth_ > kMaxNesting) p_.Error("template nested too deeply");
    }
    ~DepthGuard() { --p_.depth_; }

   private:
    Parser& p_;
  };

  const Token& Cur() const { return tokens_[pos_]; }
  const Token& Peek(size_t n = 1) const { return tokens_[std::min(pos_ + n, tokens_.size() - 1)]; }
  void Next() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }

  [[noreturn]] void Error(const std::string& message) const {
    const Token& t = Cur();
    Fail("line " + std::to_string(t.line) + ", column " + std::to_string(t.column) + ": " +
         message);
  }

  static std::string Describe(const Token& t) {
    switch (t.type) {
      case TokenType::kText:
        return "template data";
      case TokenType::kVariableBegin:
        return "'{{'";
      case TokenType::kVariableEnd:
        return "end of print statement";
      case TokenType::kBlockBegin:
        return "'{%'";
      case TokenType::kBlockEnd:
        return "end of statement block";
      case TokenType::kEnd:
        return "end of template";
      case TokenType::kString:
        return "string";
      default:
        return "'" + t.value + "'";
    }
  }

  bool IsOp(std::string_view op) const {
    return Cur().type == TokenType::kOperator && Cur().value == op;
  }
  bool IsName(std::string_view name) const {
    return Cur().type == TokenType::kName && Cur().value == name;
  }
  void ExpectOp(std::string_view op) {
    if (!IsOp(op)) Error("expected '" + std::string(op) + "', got " + Describe(Cur()));
    Next();
  }
  std::string ExpectName() {
    if (Cur().type != TokenType::kName) Error("expected name, got " + Describe(Cur()));
    std::string name = Cur().value;
    Next();
    return name;
  }
  void ExpectBlockEnd() {
    if (Cur().type != TokenType::kBlockEnd) {
      Error("expected end of statement block, got " + Describe(Cur()));
    }
    Next();
  }

  ExprPtr NewExpr(ExprKind kind, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = at.line;
    e->column = at.column;
    return e;
  }
  StmtPtr NewStmt(StmtKind kind, const Token& at) {
    auto s = std::make_unique<Stmt>();
    s->kind = kind;
    s->line = at.line;
    s->column = at.column;
    return s;
  }

  // Parses statements until `{% <one of end_names>`; leaves the stream on that name and stores
  // it in *end. With no end names, parses to the end of the template.
  Body ParseBody(std::initializer_list<std::string_view> end_names, std::string* end) {
    DepthGuard guard(*this);
    Body body;
    while (true) {
      const Token& t = Cur();
      switch (t.type) {
        case TokenType::kText: {
          auto s = NewStmt(StmtKind::kText, t);
          s->text = t.value;
          body.push_back(std::move(s));
          Next();
          break;
        }
        case TokenType::kVariableBegin: {
          auto s = NewStmt(StmtKind::kOutput, t);
          Next();
          s->expr = ParseTuple(/*with_condexpr=*/true, {});
          if (Cur().type != TokenType::kVariableEnd) {
            Error("expected end of print statement, got " + Describe(Cur()));
          }
          Next();
          body.push_back(std::move(s));
          break;
        }
        case TokenType::kBlockBegin: {
          Next();
          if (Cur().type == TokenType::kName &&
              std::find(end_names.begin(), end_names.end(), Cur().value) != end_names.end()) {
            *end = Cur().value;
            Next();
            return body;
          }
          body.push_back(ParseStatement());
          break;
        }
        case TokenType::kEnd: {
          if (end_names.size() > 0) {
            std::string names;
            for (auto n : end_names) names += (names.empty() ? "'" : ", '") + std::string(n) + "'";
            Error("unexpected end of template; looking for " + names);
          }
          return body;
        }
        default:
          Error("unexpected " + Describe(t));
      }
    }
  }

  StmtPtr ParseStatement() {
    const Token& t = Cur();
    if (t.type != TokenType::kName) Error("tag name expected");
    const std::string tag = t.value;
    if (tag == "if") return ParseIf();
    if (tag == "for") return ParseFor();
    if (tag == "set") return ParseSet();
    if (tag == "macro") return ParseMacro();
    if (tag == "filter") return ParseFilterBlock();
    if (tag == "generation") {
      auto s = NewStmt(StmtKind::kScope, t);
      Next();
      ExpectBlockEnd();
      std::string end;
      s->body = ParseBody({"endgeneration"}, &end);
      ExpectBlockEnd();
      return s;
    }
    if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) Error("'" + tag + "' outside of a loop");
      auto s = NewStmt(tag == "break" ? StmtKind::kBreak : StmtKind::kContinue, t);
      Next();
      ExpectBlockEnd();
      return s;
    }
    Error("unknown tag '" + tag + "'");
  }

  StmtPtr ParseIf() {
    auto s = NewStmt(StmtKind::kIf, Cur());
    Next();
    ExprPtr cond = ParseTuple(/*with_condexpr=*/false, {});
    while (true) {
      ExpectBlockEnd();
      std::string end;
      Body body = ParseBody({"elif", "else", "endif"}, &end);
      s->branches.emplace_back(std::move(cond), std::move(body));
      if (end == "elif") {
        cond = ParseTuple(false, {});
        continue;
      }
      if (end == "else") {
        ExpectBlockEnd();
        Body else_body = ParseBody({"endif"}, &end);
        s->branches.emplace_back(nullptr, std::move(else_body));
      }
      ExpectBlockEnd();
      return s;
    }
  }

  // A name, or names separated by commas (optionally parenthesized); with_namespace allows
  // `ns.attr` (set only).
  ExprPtr ParseAssignTarget(bool with_namespace) {
    const Token& at = Cur();
    if (with_namespace && at.type == TokenType::kName && Peek().type == TokenType::kOperator &&
        Peek().value == ".") {
      auto ns = NewExpr(ExprKind::kName, at);
      ns->name = ExpectName();
      Next();  // '.'
      auto e = NewExpr(ExprKind::kGetAttr, at);
      e->name = ExpectName();
      e->children.push_back(std::move(ns));
      return e;
    }
    bool parenthesized = IsOp("(");
    if (parenthesized) Next();
    auto tuple = NewExpr(ExprKind::kTuple, at);
    while (true) {
      auto n = NewExpr(ExprKind::kName, Cur());
      n->name = ExpectName();
      tuple->children.push_back(std::move(n));
      if (!IsOp(",")) break;
      Next();
      if (parenthesized ? IsOp(")") : !(Cur().type == TokenType::kName)) break;
    }
    if (parenthesized) ExpectOp(")");
    if (tuple->children.size() == 1 && !parenthesized) return std::move(tuple->children[0]);
    return tuple;
  }

  StmtPtr ParseFor() {
    auto s = NewStmt(StmtKind::kFor, Cur());
    Next();
    s->target = ParseAssignTarget(false);
    if (!IsName("in")) Error("expected 'in', got " + Describe(Cur()));
    Next();
    s->expr = ParseTuple(/*with_condexpr=*/false, {"if", "recursive"});
    if (IsName("if")) {
      Next();
      s->filter = ParseExpression(true);
    }
    if (IsName("recursive")) Error("recursive loops are not supported");
    ExpectBlockEnd();
    ++loop_depth_;
    std::string end;
    s->body = ParseBody({"endfor", "else"}, &end);
    --loop_depth_;
    if (end == "else") {
      ExpectBlockEnd();
      s->else_body = ParseBody({"endfor"}, &end);
    }
    ExpectBlockEnd();
    return s;
  }

  StmtPtr ParseSet() {
    const Token& at = Cur();
    Next();
    ExprPtr target = ParseAssignTarget(/*with_namespace=*/true);
    if (IsOp("=")) {
      Next();
      auto s = NewStmt(StmtKind::kSet, at);
      s->target = std::move(target);
      s->expr = ParseTuple(true, {});
      ExpectBlockEnd();
      return s;
    }
    if (target->kind != ExprKind::kName) Error("expected '='");
    auto s = NewStmt(StmtKind::kSetBlock, at);
    s->name = target->name;
    if (IsOp("|")) s->expr = ParseFilterChain(nullptr);
    ExpectBlockEnd();
    int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    std::string end;
    s->body = ParseBody({"endset"}, &end);
    loop_depth_ = saved_loop_depth;
    ExpectBlockEnd();
    return s;
  }

  StmtPtr ParseMacro() {
    auto s = NewStmt(StmtKind::kMacro, Cur());
    Next();
    s->name = ExpectName();
    ExpectOp("(");
    while (!IsOp(")")) {
      if (!s->params.empty()) ExpectOp(",");
      if (IsOp(")")) break;
      MacroParam p;
      p.name = ExpectName();
      if (IsOp("=")) {
        Next();
        p.default_value = ParseExpression(true);
      }
      s->params.push_back(std::move(p));
    }
    Next();
    ExpectBlockEnd();
    int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    std::string end;
    s->body = ParseBody({"endmacro"}, &end);
    loop_depth_ = saved_loop_depth;
    if (Cur().type == TokenType::kName) Next();  // optional `{% endmacro name %}`
    ExpectBlockEnd();
    return s;
  }

  StmtPtr ParseFilterBlock() {
    auto s = NewStmt(StmtKind::kFilterBlock, Cur());
    Next();
    s->expr = ParseFilterChain(nullptr, /*leading_pipe=*/false);
    ExpectBlockEnd();
    std::string end;
    s->body = ParseBody({"endfilter"}, &end);
    ExpectBlockEnd();
    return s;
  }

  // ---- expressions ----

  bool IsTupleEnd(std::initializer_list<std::string_view> extra_end) const {
    const Token& t = Cur();
    if (t.type == TokenType::kVariableEnd || t.type == TokenType::kBlockEnd) return true;
    if (t.type == TokenType::kOperator && t.value == ")") return true;
    if (t.type == TokenType::kName &&
        std::find(extra_end.begin(), extra_end.end(), t.value) != extra_end.end()) {
      return true;
    }
    return false;
  }

  ExprPtr ParseTuple(bool with_condexpr, std::initializer_list<std::string_view> extra_end,
                     bool explicit_parentheses = false) {
    const Token& at = Cur();
    std::vector<ExprPtr> args;
    bool is_tuple = false;
    while (true) {
      if (!args.empty()) ExpectOp(",");
      if (IsTupleEnd(extra_end)) break;
      args.push_back(ParseExpression(with_condexpr));
      if (IsOp(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!args.empty()) return std::move(args[0]);
      if (!explicit_parentheses) Error("expected an expression, got " + Describe(Cur()));
    }
    auto t = NewExpr(ExprKind::kTuple, at);
    t->children = std::move(args);
    return t;
  }

  ExprPtr ParseExpression(bool with_condexpr) {
    DepthGuard guard(*this);
    if (!with_condexpr) return ParseOr();
    ExprPtr expr = ParseOr();
    while (IsName("if")) {
      const Token& at = Cur();
      Next();
      ExprPtr cond = ParseOr();
      ExprPtr otherwise;
      if (IsName("else")) {
        Next();
        otherwise = ParseExpression(true);
      }
      auto c = NewExpr(ExprKind::kCondition, at);
      c->children.push_back(std::move(expr));
      c->children.push_back(std::move(cond));
      c->children.push_back(std::move(otherwise));
      expr = std::move(c);
    }
    return expr;
  }

  ExprPtr Binary(ExprKind kind, const Token& at, ExprPtr left, ExprPtr right, std::string op = {}) {
    auto e = NewExpr(kind, at);
    e->name = std::move(op);
    e->children.push_back(std::move(left));
    e->children.push_back(std::move(right));
    return e;
  }

  ExprPtr ParseOr() {
    ExprPtr left = ParseAnd();
    while (IsName("or")) {
      const Token& at = Cur();
      Next();
      left = Binary(ExprKind::kOr, at, std::move(left), ParseAnd());
    }
    return left;
  }

  ExprPtr ParseAnd() {
    ExprPtr left = ParseNot();
    while (IsName("and")) {
      const Token& at = Cur();
      Next();
      left = Binary(ExprKind::kAnd, at, std::move(left), ParseNot());
    }
    return left;
  }

  ExprPtr ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(*this);
      auto e = NewExpr(ExprKind::kNot, Cur());
      Next();
      e->children.push_back(ParseNot());
      return e;
    }
    return ParseCompare();
  }

  ExprPtr ParseCompare() {
    const Token& at = Cur();
    ExprPtr first = ParseMath1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      const Token& t = Cur();
      if (t.type == TokenType::kOperator &&
          (t.value == "==" || t.value == "!=" || t.value == "<" || t.value == "<=" ||
           t.value == ">" || t.value == ">=")) {
        op = t.value;
        Next();
      } else if (IsName("in")) {
        op = "in";
        Next();
      } else if (IsName("not") && Peek().type == TokenType::kName && Peek().value == "in") {
        op = "notin";
        Next();
        Next();
      } else {
        break;
      }
      if (!cmp) {
        cmp = NewExpr(ExprKind::kCompare, at);
        cmp->children.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->children.push_back(ParseMath1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  ExprPtr ParseMath1() {
    ExprPtr left = ParseConcat();
    while (IsOp("+") || IsOp("-")) {
      const Token& at = Cur();
      std::string op = at.value;
      Next();
      left = Binary(ExprKind::kBinary, at, std::move(left), ParseConcat(), op);
    }
    return left;
  }

  ExprPtr ParseConcat() {
    ExprPtr left = ParseMath2();
    while (IsOp("~")) {
      const Token& at = Cur();
      Next();
      left = Binary(ExprKind::kBinary, at, std::move(left), ParseMath2(), "~");
    }
    return left;
  }

  ExprPtr ParseMath2() {
    ExprPtr left = ParsePow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Token& at = Cur();
      std::string op = at.value;
      Next();
      left = Binary(ExprKind::kBinary, at, std::move(left), ParsePow(), op);
    }
    return left;
  }

  ExprPtr ParsePow() {
    ExprPtr left = ParseUnary(true);
    while (IsOp("**")) {
      const Token& at = Cur();
      Next();
      left = Binary(ExprKind::kBinary, at, std::move(left), ParseUnary(true), "**");
    }
    return left;
  }

  ExprPtr ParseUnary(bool with_filter) {
    DepthGuard guard(*this);
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      auto e = NewExpr(ExprKind::kUnary, Cur());
      e->name = Cur().value;
      Next();
      e->children.push_back(ParseUnary(false));
      node = std::move(e);
    } else {
      node = ParsePrimary();
    }
    node = ParsePostfix(std::move(node));
    if (with_filter) node = ParseFilterExpr(std::move(node));
    return node;
  }

  ExprPtr ParsePrimary() {
    const Token& t = Cur();
    switch (t.type) {
      case TokenType::kName: {
        auto e = NewExpr(ExprKind::kLiteral, t);
        if (t.value == "true" || t.value == "True") {
          e->literal = Value::Bool(true);
        } else if (t.value == "false" || t.value == "False") {
          e->literal = Value::Bool(false);
        } else if (t.value == "none" || t.value == "None") {
          e->literal = Value::None();
        } else {
          e->kind = ExprKind::kName;
          e->name = t.value;
        }
        Next();
        return e;
      }
      case TokenType::kString: {
        auto e = NewExpr(ExprKind::kLiteral, t);
        std::string s;
        while (Cur().type == TokenType::kString) {  // adjacent literals concatenate
          s += Cur().value;
          Next();
        }
        e->literal = Value::String(std::move(s));
        return e;
      }
      case TokenType::kInteger:
      case TokenType::kFloat: {
        auto e = NewExpr(ExprKind::kLiteral, t);
        e->literal =
            t.type == TokenType::kInteger ? Value::Int(t.int_value) : Value::Float(t.float_value);
        Next();
        return e;
      }
      case TokenType::kOperator:
        if (t.value == "(") {
          Next();
          ExprPtr e = ParseTuple(true, {}, /*explicit_parentheses=*/true);
          ExpectOp(")");
          return e;
        }
        if (t.value == "[") return ParseList();
        if (t.value == "{") return ParseDict();
        break;
      default:
        break;
    }
    Error("unexpected " + Describe(t));
  }

  ExprPtr ParseList() {
    auto e = NewExpr(ExprKind::kList, Cur());
    ExpectOp("[");
    while (!IsOp("]")) {
      if (!e->children.empty()) ExpectOp(",");
      if (IsOp("]")) break;
      e->children.push_back(ParseExpression(true));
    }
    Next();
    return e;
  }

  ExprPtr ParseDict() {
    auto e = NewExpr(ExprKind::kDict, Cur());
    ExpectOp("{");
    while (!IsOp("}")) {
      if (!e->children.empty()) ExpectOp(",");
      if (IsOp("}")) break;
      e->children.push_back(ParseExpression(true));
      ExpectOp(":");
      e->children.push_back(ParseExpression(true));
    }
    Next();
    return e;
  }

  ExprPtr ParsePostfix(ExprPtr node) {
    while (true) {
      if (IsOp(".") || IsOp("[")) {
        node = ParseSubscript(std::move(node));
      } else if (IsOp("(")) {
        node = ParseCall(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr ParseFilterExpr(ExprPtr node) {
    while (true) {
      if (IsOp("|")) {
        node = ParseFilterChain(std::move(node));
      } else if (IsName("is")) {
        node = ParseTest(std::move(node));
      } else if (IsOp("(")) {
        node = ParseCall(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr ParseSubscript(ExprPtr node) {
    const Token& at = Cur();
    if (IsOp(".")) {
      Next();
      const Token& attr = Cur();
      if (attr.type == TokenType::kName) {
        auto e = NewExpr(ExprKind::kGetAttr, at);
        e->name = attr.value;
        e->children.push_back(std::move(node));
        Next();
        return e;
      }
      if (attr.type != TokenType::kInteger) Error("expected name or number");
      auto index = NewExpr(ExprKind::kLiteral, attr);
      index->literal = Value::Int(attr.int_value);
      Next();
      auto e = NewExpr(ExprKind::kGetItem, at);
      e->children.push_back(std::move(node));
      e->children.push_back(std::move(index));
      return e;
    }
    ExpectOp("[");
    std::vector<ExprPtr> args;
    while (!IsOp("]")) {
      if (!args.empty()) ExpectOp(",");
      args.push_back(ParseSubscribed(at));
    }
    Next();
    ExprPtr index;
    if (args.size() == 1) {
      index = std::move(args[0]);
    } else {
      index = NewExpr(ExprKind::kTuple, at);
      index->children = std::move(args);
    }
    if (index->kind == ExprKind::kSlice) {  // slice node: put the object in front
      index->children.insert(index->children.begin(), std::move(node));
      return index;
    }
    auto e = NewExpr(ExprKind::kGetItem, at);
    e->children.push_back(std::move(node));
    e->children.push_back(std::move(index));
    return e;
  }

  // One subscript: an expression or a slice `start:stop:step` (each part optional). A slice is
  // returned as kSlice with children [start, stop, step] (the object is prepended by the caller).
  ExprPtr ParseSubscribed(const Token& at) {
    std::vector<ExprPtr> parts;
    if (IsOp(":")) {
      Next();
      parts.push_back(nullptr);
    } else {
      ExprPtr e = ParseExpression(true);
      if (!IsOp(":")) return e;
      Next();
      parts.push_back(std::move(e));
    }
    auto part_end = [&] { return IsOp("]") || IsOp(","); };
    if (IsOp(":")) {
      parts.push_back(nullptr);
    } else if (!part_end()) {
      parts.push_back(ParseExpression(true));
    } else {
      parts.push_back(nullptr);
    }
    if (IsOp(":")) {
      Next();
      parts.push_back(part_end() ? nullptr : ParseExpression(true));
    } else {
      parts.push_back(nullptr);
    }
    auto s = NewExpr(ExprKind::kSlice, at);
    s->children = std::move(parts);
    return s;
  }

  void ParseCallArgs(Expr& call) {
    ExpectOp("(");
    while (!IsOp(")")) {
      if (call.children.size() > 1 || !call.kwargs.empty()) ExpectOp(",");
      if (IsOp(")")) break;
      if (IsOp("*") || IsOp("**")) Error("*args and **kwargs are not supported");
      if (Cur().type == TokenType::kName && Peek().type == TokenType::kOperator &&
          Peek().value == "=") {
        std::string key = Cur().value;
        Next();
        Next();
        call.kwargs.emplace_back(std::move(key), ParseExpression(true));
      } else {
        if (!call.kwargs.empty()) Error("positional argument after keyword argument");
        call.children.push_back(ParseExpression(true));
      }
    }
    Next();
  }

  ExprPtr ParseCall(ExprPtr callee) {
    auto e = NewExpr(ExprKind::kCall, Cur());
    e->children.push_back(std::move(callee));
    ParseCallArgs(*e);
    return e;
  }

  // `| name(args) | name2 ...`; with a null operand (filter blocks, set blocks) the chain
  // applies to the rendered body.
  ExprPtr ParseFilterChain(ExprPtr node, bool leading_pipe = true) {
    bool first = true;
    while (IsOp("|") || (first && !leading_pipe)) {
      if (IsOp("|")) Next();
      first = false;
      auto e = NewExpr(ExprKind::kFilter, Cur());
      e->name = ExpectName();
      while (IsOp(".")) {
        Next();
        e->name += "." + ExpectName();
      }
      e->children.push_back(std::move(node));
      if (IsOp("(")) ParseCallArgs(*e);
      node = std::move(e);
    }
    return node;
  }

  ExprPtr ParseTest(ExprPtr node) {
    auto e = NewExpr(ExprKind::kTest, Cur());
    Next();  // 'is'
    if (IsName("not")) {
      e->negated = true;
      Next();
    }
    e->name = ExpectName();
    e->children.push_back(std::move(node));
    const Token& t = Cur();
    if (IsOp("(")) {
      ParseCallArgs(*e);
    } else if ((t.type == TokenType::kName || t.type == TokenType::kString ||
                t.type == TokenType::kInteger || t.type == TokenType::kFloat || IsOp("[") ||
                IsOp("{")) &&
               !(IsName("else") || IsName("or") || IsName("and"))) {
      if (IsName("is")) Error("You cannot chain multiple tests with is");
      e->children.push_back(ParsePostfix(ParsePrimary()));
    }
    return e;
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Template ParseTemplate(std::string_view source) {
  return Parser(Tokenize(source)).Run();
}

}  // namespace cleave::jinja
