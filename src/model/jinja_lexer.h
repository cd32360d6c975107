// Jinja lexer: splits template source into text and tag tokens the way jinja2's lexer does with
// the settings HF transformers uses (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline
// False): `{%-`/`-%}` strip all adjacent whitespace, `{%+`/`+%}` opt out, a block or comment tag
// alone on its line takes its indentation and newline with it, `{% raw %}` content is text and
// comments vanish. Newlines are normalized to "\n".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cleave::jinja {

enum class TokenType {
  kText,
  kVariableBegin,  // {{
  kVariableEnd,    // }}
  kBlockBegin,     // {%
  kBlockEnd,       // %}
  kName,
  kString,  // value is the decoded string
  kInteger,
  kFloat,
  kOperator,  // value is the operator text: "+", "//", "(", "==", ...
  kEnd,
};

struct Token {
  TokenType type = TokenType::kEnd;
  std::string value;
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
  int column = 1;
};

// Throws JinjaError ("line L, column C: ...") on malformed input. The last token is kEnd.
std::vector<Token> Tokenize(std::string_view source);

}  // namespace cleave::jinja
