#!/usr/bin/env python3
"""Independent reference forward pass for Llama-family GGUF models (llama, qwen2).

Written from the model's mathematical definition with numpy, reading weights through the `gguf`
PyPI package and its own dequantizers, so it shares no code with cleave's C++. Computes in
float64, so its logits are the "exact" values cleave's float32 kernels are compared with.

  llama_reference.py MODEL.gguf --tokens 1,2,3 --logits-out FILE [--greedy N]

Writes the logits of every position as raw little-endian float32 [num_tokens, vocab] to FILE,
and prints JSON {"num_tokens", "vocab", "greedy": [ids...]} on stdout.
"""
import argparse
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


class Reference:
    def __init__(self, path):
        self.reader = GGUFReader(path)
        self.fields = self.reader.fields
        self.arch = self.field("general.architecture")
        a = self.arch
        self.n_layers = int(self.field(f"{a}.block_count"))
        self.hidden = int(self.field(f"{a}.embedding_length"))
        self.n_heads = int(self.field(f"{a}.attention.head_count"))
        self.n_kv = int(self.field(f"{a}.attention.head_count_kv", self.n_heads))
        self.head_dim = int(self.field(f"{a}.attention.key_length", self.hidden // self.n_heads))
        self.eps = float(self.field(f"{a}.attention.layer_norm_rms_epsilon", 1e-5))
        self.base = float(self.field(f"{a}.rope.freq_base", 10000.0))
        scaling = self.field(f"{a}.rope.scaling.type", "none")
        self.pos_scale = 1.0
        if scaling == "linear":
            self.pos_scale = 1.0 / float(self.field(f"{a}.rope.scaling.factor"))
        self.neox = a == "qwen2"
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.cache = {}
        d = self.head_dim
        self.inv_freq = self.base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        if "rope_freqs.weight" in self.tensors:
            self.inv_freq = self.inv_freq / self.weight("rope_freqs.weight")
        self.embd = self.weight("token_embd.weight")
        self.out = self.weight("output.weight") if "output.weight" in self.tensors else self.embd

    def field(self, key, default=None):
        if key not in self.fields:
            if default is None:
                raise KeyError(key)
            return default
        return self.fields[key].contents()

    def weight(self, name):
        """Dequantized tensor as float64, shaped [rows, cols] (numpy order, ne reversed)."""
        if name not in self.cache:
            t = self.tensors[name]
            w = dequantize(t.data, t.tensor_type).astype(np.float64)
            shape = [int(x) for x in reversed(list(t.shape))]
            self.cache[name] = w.reshape(shape)
        return self.cache[name]

    def maybe(self, name):
        return self.weight(name) if name in self.tensors else None

    def rms_norm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, positions):
        """x: [T, heads, d]. Rotation as multiplication by e^{i theta} on complex pairs."""
        d = self.head_dim
        theta = np.outer(positions * self.pos_scale, self.inv_freq)  # [T, d/2]
        rot = np.exp(1j * theta)[:, None, :]
        if self.neox:
            z = (x[..., : d // 2] + 1j * x[..., d // 2 :]) * rot
            return np.concatenate([z.real, z.imag], axis=-1)
        z = (x[..., 0::2] + 1j * x[..., 1::2]) * rot
        out = np.empty_like(x)
        out[..., 0::2] = z.real
        out[..., 1::2] = z.imag
        return out

    def forward(self, tokens, start, kv):
        """Runs tokens at positions start.. with the cache kv (list of [K, V] per layer)."""
        T = len(tokens)
        positions = np.arange(start, start + T, dtype=np.float64)
        x = self.embd[np.asarray(tokens)]
        group = self.n_heads // self.n_kv
        for l in range(self.n_layers):
            p = f"blk.{l}."
            h = self.rms_norm(x, self.weight(p + "attn_norm.weight"))
            q = h @ self.weight(p + "attn_q.weight").T
            k = h @ self.weight(p + "attn_k.weight").T
            v = h @ self.weight(p + "attn_v.weight").T
            for name, arr in (("attn_q.bias", q), ("attn_k.bias", k), ("attn_v.bias", v)):
                b = self.maybe(p + name)
                if b is not None:
                    arr += b
            q = self.rope(q.reshape(T, self.n_heads, self.head_dim), positions)
            k = self.rope(k.reshape(T, self.n_kv, self.head_dim), positions)
            v = v.reshape(T, self.n_kv, self.head_dim)
            kv[l][0] = np.concatenate([kv[l][0], k]) if kv[l][0] is not None else k
            kv[l][1] = np.concatenate([kv[l][1], v]) if kv[l][1] is not None else v
            K, V = kv[l]
            S = K.shape[0]
            att = np.empty((T, self.n_heads, self.head_dim))
            mask = np.arange(S)[None, :] <= (start + np.arange(T))[:, None]  # [T, S]
            for hh in range(self.n_heads):
                g = hh // group
                scores = q[:, hh, :] @ K[:, g, :].T / np.sqrt(self.head_dim)
                scores = np.where(mask, scores, -np.inf)
                scores = np.exp(scores - scores.max(axis=1, keepdims=True))
                scores /= scores.sum(axis=1, keepdims=True)
                att[:, hh, :] = scores @ V[:, g, :]
            x = x + att.reshape(T, -1) @ self.weight(p + "attn_output.weight").T
            h = self.rms_norm(x, self.weight(p + "ffn_norm.weight"))
            gate = h @ self.weight(p + "ffn_gate.weight").T
            up = h @ self.weight(p + "ffn_up.weight").T
            x = x + (gate / (1.0 + np.exp(-gate)) * up) @ self.weight(p + "ffn_down.weight").T
        x = self.rms_norm(x, self.weight("output_norm.weight"))
        return x @ self.out.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--logits-out", help="raw float32 [num_tokens, vocab] output file")
    ap.add_argument("--greedy", type=int, default=0, help="greedy continuation length")
    args = ap.parse_args()
    tokens = [int(t) for t in args.tokens.split(",") if t]
    ref = Reference(args.model)
    kv = [[None, None] for _ in range(ref.n_layers)]
    logits = ref.forward(tokens, 0, kv)
    if args.logits_out:
        logits.astype("<f4").tofile(args.logits_out)
    greedy = []
    next_logits = logits[-1]
    pos = len(tokens)
    for _ in range(args.greedy):
        tok = int(np.argmax(next_logits))
        greedy.append(tok)
        next_logits = ref.forward([tok], pos, kv)[-1]
        pos += 1
    json.dump({"num_tokens": len(tokens), "vocab": int(logits.shape[1]), "greedy": greedy}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
