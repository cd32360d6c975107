#include "model/jinja_lexer.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "model/jinja_value.h"

namespace cleave::jinja {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool IsDigit(char c) {
  return c >= '0' && c <= '9';
}
bool IsNameStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool IsNameChar(char c) {
  return IsNameStart(c) || IsDigit(c);
}

// jinja2 splits on \r\n, \r and \n and rejoins with \n, dropping one trailing newline.
std::string NormalizeNewlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) : src_(NormalizeNewlines(source)) {}

  std::vector<Token> Run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t start = FindTagStart(pos_);
      if (start == std::string::npos) {
        EmitText(pos_, src_.substr(pos_));
        break;
      }
      char kind = src_[start + 1];
      char sign = 0;
      if (start + 2 < src_.size() && (src_[start + 2] == '-' || src_[start + 2] == '+')) {
        sign = src_[start + 2];
      }
      std::string text = src_.substr(pos_, start - pos_);
      size_t raw_end = kind == '%' ? MatchRawBegin(start) : std::string::npos;
      StripBeforeTag(text, sign, kind != '{', line_starting);
      EmitText(pos_, std::move(text));
      if (raw_end != std::string::npos) {
        line_starting = raw_end > 0 && src_[raw_end - 1] == '\n';
        pos_ = raw_end;
        line_starting = LexRawBody(line_starting);
        continue;
      }
      pos_ = start + 2 + (sign != 0 ? 1 : 0);
      if (kind == '#') {
        line_starting = SkipComment(start);
      } else {
        line_starting = LexTag(kind == '{', start);
      }
    }
    Token end;
    end.type = TokenType::kEnd;
    SetPosition(end, src_.size());
    tokens_.push_back(std::move(end));
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void Error(size_t offset, const std::string& message) const {
    int line = 1, column = 1;
    Position(offset, line, column);
    Fail("line " + std::to_string(line) + ", column " + std::to_string(column) + ": " + message);
  }

  void Position(size_t offset, int& line, int& column) const {
    offset = std::min(offset, src_.size());
    line = 1 + static_cast<int>(std::count(src_.begin(), src_.begin() + offset, '\n'));
    size_t line_start = src_.rfind('\n', offset == 0 ? 0 : offset - 1);
    line_start = (line_start == std::string::npos || offset == 0) ? 0 : line_start + 1;
    column = 1 + static_cast<int>(offset - line_start);
  }

  void SetPosition(Token& token, size_t offset) {
    // Tokens are produced in order, so advance a running line counter instead of rescanning.
    while (line_offset_ < offset && line_offset_ < src_.size()) {
      if (src_[line_offset_] == '\n') {
        ++line_;
        line_start_ = line_offset_ + 1;
      }
      ++line_offset_;
    }
    token.line = line_;
    token.column = 1 + static_cast<int>(offset - line_start_);
  }

  size_t FindTagStart(size_t from) const {
    size_t p = src_.find('{', from);
    while (p != std::string::npos && p + 1 < src_.size()) {
      char c = src_[p + 1];
      if (c == '{' || c == '%' || c == '#') return p;
      p = src_.find('{', p + 1);
    }
    return std::string::npos;
  }

  // `{%(-|+|)\s*raw\s*(-%}\s*|%})`: returns the offset after the tag, or npos.
  size_t MatchRawBegin(size_t start) const {
    size_t p = start + 2;
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ++p;
    while (p < src_.size() && IsSpace(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0) return std::string::npos;
    p += 3;
    while (p < src_.size() && IsSpace(src_[p])) ++p;
    if (src_.compare(p, 3, "-%}") == 0) {
      p += 3;
      while (p < src_.size() && IsSpace(src_[p])) ++p;
      return p;
    }
    if (src_.compare(p, 2, "%}") == 0) return p + 2;
    return std::string::npos;
  }

  // jinja2's OptionalLStrip: `-` strips all trailing whitespace; otherwise, for block and
  // comment tags, whitespace between the line start and the tag is dropped.
  static void StripBeforeTag(std::string& text, char sign, bool lstrip_applies,
                             bool line_starting) {
    if (sign == '-') {
      size_t end = text.size();
      while (end > 0 && IsSpace(text[end - 1])) --end;
      text.resize(end);
    } else if (sign != '+' && lstrip_applies) {
      size_t nl = text.rfind('\n');
      size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if ((l_pos > 0 || line_starting) && l_pos < text.size() &&
          std::all_of(text.begin() + static_cast<std::ptrdiff_t>(l_pos), text.end(),
                      [](char c) { return IsSpace(c) && c != '\n'; })) {
        text.resize(l_pos);
      }
    }
  }

  void EmitText(size_t offset, std::string text) {
    if (text.empty()) return;
    Token t;
    t.type = TokenType::kText;
    t.value = std::move(text);
    SetPosition(t, offset);
    tokens_.push_back(std::move(t));
  }

  // Consumes a block/comment end's trailing part: "-X}" eats all whitespace, "X}" one newline
  // (trim_blocks), "+X}" nothing. `p` points just past the closing brace. Returns the new offset
  // and sets line_starting like jinja2 (did the match end with a newline?).
  size_t ConsumeAfterEnd(size_t p, char modifier, bool trim_newline, bool& line_starting) const {
    size_t begin = p;
    if (modifier == '-') {
      while (p < src_.size() && IsSpace(src_[p])) ++p;
    } else if (modifier != '+' && trim_newline && p < src_.size() && src_[p] == '\n') {
      ++p;
    }
    line_starting = p > begin ? src_[p - 1] == '\n' : false;
    return p;
  }

  bool SkipComment(size_t start) {
    size_t close = src_.find("#}", pos_);
    if (close == std::string::npos) Error(start, "Missing end of comment tag");
    char modifier =
        (close > pos_ && (src_[close - 1] == '-' || src_[close - 1] == '+')) ? src_[close - 1] : 0;
    bool line_starting = false;
    pos_ = ConsumeAfterEnd(close + 2, modifier, /*trim_newline=*/true, line_starting);
    return line_starting;
  }

  // After `{% raw %}`: text up to `{%(-|+|)\s*endraw\s*(+%}|-%}\s*|%}\n?)`.
  bool LexRawBody(bool line_starting) {
    size_t search = pos_;
    while (true) {
      size_t open = src_.find("{%", search);
      if (open == std::string::npos) Error(pos_, "Missing end of raw directive");
      size_t p = open + 2;
      char sign = 0;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
      while (p < src_.size() && IsSpace(src_[p])) ++p;
      if (src_.compare(p, 6, "endraw") != 0) {
        search = open + 2;
        continue;
      }
      p += 6;
      while (p < src_.size() && IsSpace(src_[p])) ++p;
      char modifier = 0;
      if (src_.compare(p, 3, "+%}") == 0 || src_.compare(p, 3, "-%}") == 0) {
        modifier = src_[p];
        p += 3;
      } else if (src_.compare(p, 2, "%}") == 0) {
        p += 2;
      } else {
        search = open + 2;
        continue;
      }
      std::string text = src_.substr(pos_, open - pos_);
      StripBeforeTag(text, sign, true, line_starting);
      EmitText(pos_, std::move(text));
      bool ls = false;
      pos_ = ConsumeAfterEnd(p, modifier, true, ls);
      return ls;
    }
  }

  void Push(TokenType type, size_t offset, std::string value = {}) {
    Token t;
    t.type = type;
    t.value = std::move(value);
    SetPosition(t, offset);
    tokens_.push_back(std::move(t));
  }

  // Lexes the inside of `{{ ... }}` or `{% ... %}` up to and including its end delimiter.
  bool LexTag(bool is_variable, size_t start) {
    Push(is_variable ? TokenType::kVariableBegin : TokenType::kBlockBegin, start);
    std::vector<char> brackets;
    const char close = is_variable ? '}' : '%';
    while (true) {
      while (pos_ < src_.size() && IsSpace(src_[pos_])) ++pos_;
      if (pos_ >= src_.size()) {
        Error(start, is_variable ? "unexpected end of template, expected '}}'"
                                 : "unexpected end of template, expected '%}'");
      }
      if (brackets.empty()) {
        char c = src_[pos_];
        char modifier = 0;
        size_t len = 0;
        if ((c == '-' || (c == '+' && !is_variable)) &&
            src_.compare(pos_ + 1, 2, std::string{close, '}'}) == 0) {
          modifier = c;
          len = 3;
        } else if (c == close && pos_ + 1 < src_.size() && src_[pos_ + 1] == '}') {
          len = 2;
        }
        if (len > 0) {
          Push(is_variable ? TokenType::kVariableEnd : TokenType::kBlockEnd, pos_);
          bool line_starting = false;
          pos_ = ConsumeAfterEnd(pos_ + len, modifier, !is_variable, line_starting);
          return line_starting;
        }
      }
      LexExpressionToken(brackets);
    }
  }

  void LexExpressionToken(std::vector<char>& brackets) {
    const size_t begin = pos_;
    char c = src_[pos_];
    if (IsDigit(c)) {
      LexNumber();
      return;
    }
    if (IsNameStart(c)) {
      size_t p = pos_;
      while (p < src_.size() && IsNameChar(src_[p])) ++p;
      Push(TokenType::kName, begin, src_.substr(pos_, p - pos_));
      pos_ = p;
      return;
    }
    if (c == '\'' || c == '"') {
      LexString(c);
      return;
    }
    static const char* const kOperators[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/",
                                             "*",  "%",  "~",  "[",  "]",  "(",  ")", "{", "}",
                                             ">",  "<",  "=",  ".",  ":",  "|",  ",", ";"};
    for (const char* op : kOperators) {
      size_t len = std::char_traits<char>::length(op);
      if (src_.compare(pos_, len, op) != 0) continue;
      if (len == 1 && (c == '(' || c == '[' || c == '{')) brackets.push_back(c);
      if (len == 1 && (c == ')' || c == ']' || c == '}')) {
        char expected = c == ')' ? '(' : (c == ']' ? '[' : '{');
        if (brackets.empty() || brackets.back() != expected) {
          Error(begin, std::string("unexpected '") + c + "'");
        }
        brackets.pop_back();
      }
      Push(TokenType::kOperator, begin, op);
      pos_ += len;
      return;
    }
    Error(begin, std::string("unexpected char '") + c + "'");
  }

  // Integers and floats, with '_' digit separators: 12, 1_000, 1.5, 2e10, 1.5E-3.
  void LexNumber() {
    const size_t begin = pos_;
    auto digits = [&](size_t p) {
      size_t q = p;
      while (q < src_.size() &&
             (IsDigit(src_[q]) ||
              (src_[q] == '_' && q > p && q + 1 < src_.size() && IsDigit(src_[q + 1])))) {
        ++q;
      }
      return q;
    };
    size_t p = digits(pos_);
    bool is_float = false;
    bool after_dot = begin > 0 && src_[begin - 1] == '.';  // `x.0.1` stays integer subscripts
    if (!after_dot && p + 1 < src_.size() && src_[p] == '.' && IsDigit(src_[p + 1])) {
      p = digits(p + 1);
      is_float = true;
    }
    if (!after_dot && p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
      size_t q = p + 1;
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (q < src_.size() && IsDigit(src_[q])) {
        p = digits(q);
        is_float = true;
      }
    }
    std::string text;
    for (size_t i = begin; i < p; ++i) {
      if (src_[i] != '_') text.push_back(src_[i]);
    }
    Token t;
    SetPosition(t, begin);
    t.value = text;
    errno = 0;
    if (is_float) {
      t.type = TokenType::kFloat;
      t.float_value = std::strtod(text.c_str(), nullptr);
    } else {
      t.type = TokenType::kInteger;
      t.int_value = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE) Error(begin, "integer literal too large");
    }
    tokens_.push_back(std::move(t));
    pos_ = p;
  }

  // Python string literal semantics (jinja2 decodes with "unicode-escape").
  void LexString(char quote) {
    const size_t begin = pos_;
    std::string out;
    size_t p = pos_ + 1;
    while (true) {
      if (p >= src_.size()) Error(begin, "unexpected end of string literal");
      char c = src_[p];
      if (c == quote) break;
      if (c != '\\') {
        out.push_back(c);
        ++p;
        continue;
      }
      if (p + 1 >= src_.size()) Error(begin, "unexpected end of string literal");
      char e = src_[p + 1];
      p += 2;
      switch (e) {
        case '\n':
          break;
        case '\\':
          out.push_back('\\');
          break;
        case '\'':
          out.push_back('\'');
          break;
        case '"':
          out.push_back('"');
          break;
        case 'a':
          out.push_back('\a');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'v':
          out.push_back('\v');
          break;
        case 'x':
        case 'u':
        case 'U': {
          int n = e == 'x' ? 2 : (e == 'u' ? 4 : 8);
          uint32_t cp = 0;
          for (int i = 0; i < n; ++i) {
            int h = p < src_.size() ? HexValue(src_[p]) : -1;
            if (h < 0) Error(begin, "truncated \\" + std::string(1, e) + " escape");
            cp = cp * 16 + static_cast<uint32_t>(h);
            ++p;
          }
          if (cp > 0x10ffff) Error(begin, "illegal Unicode character");
          Utf8Append(out, cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int i = 0; i < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++i) {
              cp = cp * 8 + static_cast<uint32_t>(src_[p++] - '0');
            }
            Utf8Append(out, cp);
          } else {
            out.push_back('\\');
            out.push_back(e);
          }
      }
    }
    Push(TokenType::kString, begin, std::move(out));
    pos_ = p + 1;
  }

  std::string src_;
  size_t pos_ = 0;
  std::vector<Token> tokens_;
  size_t line_offset_ = 0;
  size_t line_start_ = 0;
  int line_ = 1;
};

}  // namespace

std::vector<Token> Tokenize(std::string_view source) {
  return Lexer(source).Run();
}

}  // namespace cleave::jinja
