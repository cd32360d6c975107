#!/usr/bin/env python3
"""Renders chat templates with Python jinja2 exactly as HF transformers' apply_chat_template does,
and writes tests/fixtures/chat_templates/expected.json for cleave's C++ engine tests.

Environment (transformers/utils/chat_template_utils.py, _compile_jinja_template):
  ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                extensions=[AssistantTracker, jinja2.ext.loopcontrols])
  filters["tojson"] = json.dumps(x, ensure_ascii=False, indent, separators, sort_keys)
  globals["raise_exception"] raises TemplateError(message)
  globals["strftime_now"] = datetime.now().strftime   (fixed here: FIXED_NOW, UTC)
and render(messages=..., tools=None, documents=None, add_generation_prompt=..., bos_token=...,
eos_token=..., **extra).

Two sections:
  cases:    real templates (files next to expected.json) x conversations.
  snippets: small templates exercising one engine feature each.
Run: .venv/bin/python tests/reference/make_chat_template_fixture.py
"""
import json
import os
from datetime import datetime, timezone

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures", "chat_templates")
FIXED_NOW = 1726396200  # 2024-09-15 10:30:00 UTC


class GenerationTag(jinja2.ext.Extension):
    """HF's AssistantTracker, minus the index tracking: {% generation %}body{% endgeneration %}."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.fromtimestamp(FIXED_NOW, tz=timezone.utc).strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


ENV = make_env()


def render(source, messages, add_generation_prompt, bos_token, eos_token, extra):
    try:
        # apply_chat_template(tools=...) is its own argument; other extras are template kwargs.
        kwargs = {"tools": None, "documents": None, **extra}
        out = ENV.from_string(source).render(messages=messages,
                                             add_generation_prompt=add_generation_prompt,
                                             bos_token=bos_token, eos_token=eos_token, **kwargs)
        return out, None
    except jinja2.exceptions.TemplateError as e:
        return None, {"type": type(e).__name__, "message": str(e)}
    except Exception as e:  # noqa: BLE001 - any Python error is a template error for us
        return None, {"type": type(e).__name__, "message": str(e)}


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def system(text):
    return {"role": "system", "content": text}


SPECIAL = ("Ünïcödé 中文 😀 'single' \"double\" back\\slash\n\nline two\t tab "
           "{{ not a tag }} {% neither %} <b>html</b> &amp;")

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}

COMMON = [
    ("system_user", [system("You are a terse assistant."), user("Hello!")], True, {}),
    ("multi_turn", [system("Be brief."), user("Hi"), assistant("Hello, how can I help?"),
                    user("What is 2+2?"), assistant("4"), user("Thanks")], True, {}),
    ("no_system_no_prompt", [user("Just one message")], False, {}),
    ("ends_with_assistant", [user("Q"), assistant("  A with spaces  ")], False, {}),
    ("special_chars", [user(SPECIAL), assistant(SPECIAL + "  "), user("  padded  ")], True, {}),
]

CASES = {
    "smollm2-135m-instruct.jinja": ("<|im_start|>", "<|im_end|>", COMMON + [
        ("user_first_default_system", [user("a"), assistant("b"), user("c")], True, {}),
    ]),
    "qwen2.5-instruct.jinja": ("", "<|im_end|>", COMMON + [
        ("tools", [system("You help with weather."), user("Weather in Zürich?"),
                   {"role": "assistant", "content": "",
                    "tool_calls": [{"type": "function", "function": {
                        "name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius"}}}]},
                   {"role": "tool", "content": "{\"temp\": 21}"},
                   {"role": "tool", "content": "second result"},
                   assistant("It is 21 °C.")], True, {"tools": [WEATHER_TOOL]}),
        ("tools_no_system", [user("Weather?")], True, {"tools": [WEATHER_TOOL]}),
    ]),
    "llama3.1-instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>", COMMON + [
        ("date_string", [user("What day is it?")], True, {"date_string": "15 Sep 2024"}),
        ("tools_in_user_message", [system("Sys"), user("  Weather in Paris?  "),
                                   {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                                       "name": "get_weather", "arguments": {"city": "Paris"}}}]},
                                   {"role": "ipython", "content": {"temp": 18, "sky": "clear"}},
                                   assistant("18 and clear.")], True, {"tools": [WEATHER_TOOL]}),
        ("tools_in_system", [user("Weather?")], True,
         {"tools": [WEATHER_TOOL], "tools_in_user_message": False}),
        ("builtin_tools", [user("Search it"),
                           {"role": "assistant", "tool_calls": [{"function": {
                               "name": "brave_search", "arguments": {"query": "cleave"}}}]}],
         True, {"builtin_tools": ["brave_search", "code_interpreter"]}),
        ("raise_two_tool_calls", [user("x"), {"role": "assistant", "tool_calls": [
            {"function": {"name": "a", "arguments": {}}}, {"function": {"name": "b", "arguments": {}}}]}],
         True, {}),
        ("raise_tools_without_user", [], True, {"tools": [WEATHER_TOOL]}),
    ]),
    "mistral-7b-instruct-v0.3.jinja": ("<s>", "</s>", COMMON + [
        ("raise_alternation", [user("a"), user("b")], True, {}),
        ("raise_system_role_late", [user("a"), assistant("b"), system("c")], True, {}),
        ("tools", [user("Weather in Rome?"),
                   {"role": "assistant", "tool_calls": [{"id": "abc123def", "type": "function", "function": {
                       "name": "get_weather", "arguments": {"city": "Rome"}}}]},
                   {"role": "tool", "tool_call_id": "abc123def", "content": "{\"temp\": 25}"},
                   assistant("25 degrees."), user("And Milan?")], True, {"tools": [WEATHER_TOOL]}),
        ("raise_bad_tool_call_id", [user("x"), {"role": "assistant", "tool_calls": [
            {"id": "short", "function": {"name": "f", "arguments": {}}}]}], True, {}),
    ]),
    "mistral-7b-instruct-v0.2.jinja": ("<s>", "</s>", [
        ("multi_turn", [user("Hi"), assistant("Hello"), user("Bye")], True, {}),
        ("special_chars", [user(SPECIAL), assistant(SPECIAL)], False, {}),
        ("raise_alternation", [user("a"), assistant("b"), assistant("c")], True, {}),
        ("raise_system", [system("s"), user("a")], True, {}),
    ]),
    "gemma3-it.jinja": ("<bos>", "<eos>", [c for c in COMMON if c[0] != "multi_turn"] + [
        ("multi_turn", [user("Hi"), assistant("Hello, how can I help?"), user("What is 2+2?"),
                        assistant("4"), user("Thanks")], True, {}),
        ("list_content", [{"role": "system", "content": [{"type": "text", "text": "Sys prompt"}]},
                          {"role": "user", "content": [{"type": "text", "text": "  Look: "},
                                                       {"type": "image"},
                                                       {"type": "text", "text": "what is it?  "}]}],
         True, {}),
        ("raise_alternation", [user("a"), user("b")], True, {}),
        ("raise_invalid_content", [{"role": "user", "content": 42}], True, {}),
    ]),
}

# (name, template, context). Each exercises one engine feature; rendered with the same env.
SNIPPETS = [
    ("trim_blocks", "{% if true %}\nA\n{% endif %}\nB", {}),
    ("lstrip_blocks", "x\n    {% if true %}\n    y\n    {% endif %}\nz", {}),
    ("lstrip_not_for_vars", "a\n    {{ 'v' }}\nb", {}),
    ("minus_strip", "a  \n  {%- if true -%}  \n  b  \n  {%- endif -%}  \n  c", {}),
    ("plus_keeps", "a\n    {%+ if true %}b{% endif +%}\nc", {}),
    ("var_strip", "a   {{- 'b' -}}   c", {}),
    ("comment_lstrip", "a\n  {# comment #}\nb {#- x -#}  c", {}),
    ("raw", "{% raw %}{{ not rendered }}{% endraw %}", {}),
    ("trailing_newline_dropped", "a\n", {}),
    ("crlf", "a\r\nb\r\n{% if true %}\r\nc\r\n{% endif %}\r\n", {}),
    ("literals", "{{ [1, 'a', none, true, 1.5, {'k': \"it's\"}, (1,), (1, 2)] }}", {}),
    ("print_types", "{{ none }} {{ true }} {{ 3 }} {{ 2.0 }} {{ 1e20 }} {{ 1e-5 }} {{ 0.1 + 0.2 }} {{ 1/3 }}", {}),
    ("arith", "{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 1 + 2 * 3 - 4 }}", {}),
    ("concat", "{{ 'a' ~ 1 ~ none ~ true ~ undefined_thing }} {{ 'x' + 'y' }} {{ 'ab' * 3 }} {{ [1] + [2] }}", {}),
    ("compare", "{{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ [1, 2] == [1, 2] }} {{ 'a' != 'b' }}", {}),
    ("in_ops", "{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }} {{ 'x' in missing }}", {}),
    ("logic", "{{ 0 or 'x' }} {{ 1 and 'y' }} {{ not 0 }} {{ none or [] }} {{ 'a' if false else 'b' }} [{{ 'a' if false }}]", {}),
    ("slices", "{{ 'hello'[::-1] }} {{ 'héllo'[1:3] }} {{ [1, 2, 3, 4][1:] }} {{ [1, 2, 3, 4][:-1] }} {{ [1, 2, 3, 4][::2] }} {{ 'abc'[-1] }} {{ [1,2,3][5:] }}", {}),
    ("attr_item", "{{ d.a }} {{ d['a'] }} {{ d.missing }}|{{ d.items is defined }} {{ l[0] }} {{ l.1 }} {{ l[-1] }}",
     {"d": {"a": "A"}, "l": ["x", "y", "z"]}),
    ("undefined_printing", "[{{ nothing }}] [{{ d.nothing }}] {{ nothing is defined }} {{ d.nothing is undefined }}", {"d": {}}),
    ("for_loop_vars", "{% for x in items %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}|{% endfor %}", {"items": ["a", "b", "c"]}),
    ("for_prev_next", "{% for x in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }};{% endfor %}", {}),
    ("for_else", "{% for x in [] %}x{% else %}empty{% endfor %}", {}),
    ("for_filter", "{% for x in range(10) if x is odd %}{{ x }}{{ loop.length }},{% endfor %}", {}),
    ("for_dict_items", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}", {"d": {"z": 1, "a": 2}}),
    ("for_string", "{% for c in 'hé!' %}[{{ c }}]{% endfor %}", {}),
    ("loop_scope", "{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}", {}),
    ("if_scope", "{% if true %}{% set y = 5 %}{% endif %}{{ y }}", {}),
    ("break_continue", "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}", {}),
    ("loop_cycle", "{% for i in range(4) %}{{ loop.cycle('a', 'b') }}{% endfor %}", {}),
    ("namespace", "{% set ns = namespace(n=0, s='') %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}", {}),
    ("set_tuple_and_block", "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set blk %}  X{{ a }}  {% endset %}[{{ blk }}]{% set up | upper %}abc{% endset %}{{ up }}", {}),
    ("macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', punct='?') }} {{ greet(name='C') }}", {}),
    ("macro_recursion", "{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(5) }}", {}),
    ("filter_block", "{% filter upper %}hello {{ 'x' }}{% endfilter %}", {}),
    ("generation_tag", "a{% generation %}B{% endgeneration %}c", {}),
    ("filters_text", "{{ '  x  '|trim }}|{{ 'xxhixx'|trim('x') }}|{{ 'Hello'|lower }}|{{ 'Hello'|upper }}|{{ 'hello wORLD-foo(bar'|title }}|{{ 'hELLO'|capitalize }}|{{ 'a-b-c'|replace('-', '+') }}|{{ 'a-b-c'|replace('-', '', 1) }}", {}),
    ("filters_seq", "{{ [3, 1, 2]|sort }} {{ ['b', 'A', 'c']|sort }} {{ [3, 1, 2]|sort(reverse=true) }} {{ [1, 2, 3]|reverse|list }} {{ 'abc'|reverse }} {{ [1, 2]|first }} {{ [1, 2]|last }} {{ [1, 2, 2, 'a', 'A']|unique|list }} {{ [1, 2, 3]|join(', ') }} {{ [1,2,3]|length }} {{ 'héllo'|length }} {{ {'a': 1}|count }}", {}),
    ("filters_select", "{{ msgs|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(',') }} {{ msgs|rejectattr('role', 'eq', 'user')|list|length }} {{ [1, 2, 3, 4]|select('even')|list }} {{ [1, 0, 2]|select|list }} {{ ['a', 'code_interpreter']|reject('equalto', 'code_interpreter')|join }}",
     {"msgs": [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}]}),
    ("filters_misc", "{{ missing|default('dflt') }} {{ ''|default('e', true) }} {{ none|default('n') }} {{ '42'|int + 1 }} {{ '3.7'|int }} {{ 'x'|int }} {{ 3|float }} {{ -3|abs }} {{ 2.5|round }} {{ 3.14159|round(2) }} {{ 3.2|round(0, 'ceil') }} {{ 5|string ~ 'x' }} {{ [('a', 1)]|list }} {{ {'b': 1, 'a': 2}|items|list }} {{ {'b': 1, 'a': 2}|dictsort }} {{ [1, 2, 3]|sum }} {{ [3, 1]|min }} {{ [3, 1]|max }}", {}),
    ("filter_indent", "{{ 'a\nb\n\nc'|indent(2) }}|{{ 'a\nb'|indent(4, true) }}|{{ 'a\n\nb'|indent('> ', blank=true) }}", {}),
    ("tojson", "{{ obj|tojson }}\n{{ obj|tojson(indent=2) }}\n{{ {'b': [], 'a': {}}|tojson(sort_keys=true) }}\n{{ 'é\"\\\\\n\t\x01'|tojson }}\n{{ [1.0, 1e100, -0.5, none, true]|tojson }}",
     {"obj": {"name": "f", "args": {"x": [1, 2, {"deep": "Zürich 😀"}], "y": None, "z": 1.5}, "empty": []}}),
    ("tests", "{{ 'a' is string }} {{ 1 is number }} {{ true is number }} {{ true is integer }} {{ 1.0 is float }} {{ none is none }} {{ {} is mapping }} {{ [] is iterable }} {{ 'a' is iterable }} {{ 1 is iterable }} {{ [] is sequence }} {{ true is boolean }} {{ false is false }} {{ true is true }} {{ 4 is divisibleby 2 }} {{ 3 is odd }} {{ 3 is even }} {{ 'a' is lower }} {{ 'A' is upper }} {{ 1 is eq 1 }} {{ 2 is gt 1 }} {{ 'a' is in 'abc' }} {{ none is sameas none }} {{ x is not defined }}", {}),
    ("string_methods", "{{ ' a b '.strip() }}|{{ 'xxa'.lstrip('x') }}|{{ 'a  '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith(('x', 'c')) }}|{{ 'ab'.upper() }}|{{ 'AB'.lower() }}|{{ 'hello world'.title() }}|{{ 'aXa'.replace('a', 'b') }}|{{ '{} and {}'.format(1, 'two') }}|{{ 'abcb'.find('b') }}|{{ 'abcb'.count('b') }}|{{ '-'.join(['a', 'b']) }}|{{ 'a</think>b'.split('</think>')[-1].lstrip('\n') }}", {}),
    ("dict_methods", "{{ d.keys()|list }} {{ d.values()|list }} {{ d.get('a') }} {{ d.get('zz', 'dflt') }} {{ d.get('zz') }}", {"d": {"a": 1, "b": [2]}}),
    ("adjacent_strings", "{{ 'a' 'b' \"c\" }}", {}),
    ("string_escapes", "{{ 'tab\\there\\nnl \\'q\\' \\x41\\u00e9 back\\\\slash \\d' }}", {}),
    ("number_literals", "{{ 1_000 + 1 }} {{ 1.5e3 }} {{ 0.5 }} {{ 10**9 }}", {}),
    ("range_forms", "{{ range(3)|list }} {{ range(1, 4)|list }} {{ range(10, 0, -3)|list }}", {}),
    ("dict_global", "{{ dict(a=1, b='x') }} {{ namespace(a=1).a }}", {}),
    ("strftime", "{{ strftime_now('%d %b %Y') }} {{ strftime_now('%Y-%m-%d %H:%M') }}", {}),
    ("raise", "{% if true %}{{ raise_exception('custom failure: ' ~ 42) }}{% endif %}", {}),
    ("err_undefined_arith", "{{ missing + 1 }}", {}),
    ("err_undefined_attr", "{{ missing.attr }}", {}),
    ("err_range_too_big", "{% for i in range(10**9) %}{% endfor %}", {}),
    ("err_type", "{{ 'a' + 1 }}", {}),
    ("err_not_callable", "{{ 'a'() }}", {}),
    ("err_unknown_filter", "{{ 'a'|no_such_filter }}", {}),
    ("err_div_zero", "{{ 1 // 0 }}", {}),
    ("content_none", "{{ m.content }}|{% if m.content %}yes{% else %}no{% endif %}|{{ m.content is none }}", {"m": {"content": None}}),
    ("nested_loops", "{% for row in rows %}{% for c in row %}{{ loop.index }}{{ c }}{% endfor %};{{ loop.index }}{% endfor %}", {"rows": [["a", "b"], ["c"]]}),
]


def main():
    cases = []
    for filename, (bos, eos, convs) in CASES.items():
        with open(os.path.join(FIXTURES, filename), encoding="utf-8") as f:
            source = f.read()
        for name, messages, gen, extra in convs:
            out, err = render(source, messages, gen, bos, eos, extra)
            cases.append({"name": f"{filename}:{name}", "template": filename, "messages": messages,
                          "add_generation_prompt": gen, "bos_token": bos, "eos_token": eos,
                          "extra_context": extra, "expected": out, "error": err})
            if name.startswith("raise") != (err is not None):
                raise SystemExit(f"{filename}:{name}: unexpected outcome {err!r}")
    snippets = []
    for name, template, context in SNIPPETS:
        out, err = render(template, [], False, "<s>", "</s>", context)
        snippets.append({"name": name, "template": template, "context": context,
                         "expected": out, "error": err})
        if name.startswith(("raise", "err_")) != (err is not None):
            raise SystemExit(f"snippet {name}: unexpected outcome {err!r}")
    result = {"jinja2_version": jinja2.__version__, "fixed_now_unix_seconds": FIXED_NOW,
              "cases": cases, "snippets": snippets}
    path = os.path.join(FIXTURES, "expected.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases and {len(snippets)} snippets to {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
