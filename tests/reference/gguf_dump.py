#!/usr/bin/env python3
"""Dumps a GGUF file as JSON with the independent `gguf` package (the reference for our reader).

Usage: gguf_dump.py FILE

Prints {"version", "alignment", "data_offset", "kv": [{"key", "type", "elem_type"?, "value"}],
"tensors": [{"name", "type", "shape" (ne[0] first), "offset" (relative to the data section),
"nbytes", "fnv1a64" (of the tensor bytes, as a decimal string)}]}.
Nested arrays are not supported by gguf.GGUFReader's contents(), so files compared with it
should not contain them.
"""
import json
import sys

import gguf


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main() -> int:
    reader = gguf.GGUFReader(sys.argv[1])
    out = {
        "version": int(reader.fields["GGUF.version"].contents()),
        "alignment": int(reader.alignment),
        "data_offset": int(reader.data_offset),
        "kv": [],
        "tensors": [],
    }
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        entry = {"key": name, "type": field.types[0].name.lower()}
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            entry["elem_type"] = field.types[-1].name.lower()
        value = field.contents()
        if field.types[0] == gguf.GGUFValueType.BOOL:
            value = bool(value)
        entry["value"] = value
        out["kv"].append(entry)
    raw = reader.data
    for t in reader.tensors:
        start = int(t.data_offset)
        out["tensors"].append({
            "name": t.name,
            "type": t.tensor_type.name.lower(),
            "shape": [int(d) for d in t.shape],
            "offset": start - int(reader.data_offset),
            "nbytes": int(t.n_bytes),
            "fnv1a64": str(fnv1a64(bytes(raw[start:start + int(t.n_bytes)]))),
        })
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
