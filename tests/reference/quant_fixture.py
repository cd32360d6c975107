"""Writes random quantized blocks and their dequantization by the independent `gguf` package.

Usage: quant_fixture.py OUT_DIR [NUM_BLOCKS]

For each format NAME in FORMATS it writes OUT_DIR/NAME.bin (raw blocks, exactly the bytes a
GGUF file would hold) and OUT_DIR/NAME.f32 (gguf.quants.dequantize of them, little-endian
float32). tests/kernels/quant_test.cc feeds the .bin files to cleave's DequantizeRow and
compares with the .f32 files, which checks our reading of every block layout against an
implementation we did not write.
"""

import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

# Byte offsets of the f16 fields inside each block, so random bytes get finite, sane scales.
FORMATS = {
    "q8_0": (T.Q8_0, [0]),
    "q4_0": (T.Q4_0, [0]),
    "q4_1": (T.Q4_1, [0, 2]),
    "q4_k": (T.Q4_K, [0, 2]),
    "q5_k": (T.Q5_K, [0, 2]),
    "q6_k": (T.Q6_K, [208]),
    "f16": (T.F16, None),
    "bf16": (T.BF16, None),
}


def main() -> None:
    out = Path(sys.argv[1])
    num_blocks = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    rng = np.random.default_rng(1234)
    out.mkdir(parents=True, exist_ok=True)
    for name, (qtype, half_offsets) in FORMATS.items():
        block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
        if half_offsets is None:  # plain 16-bit floats
            values = rng.standard_normal(num_blocks * 256).astype(np.float32)
            if qtype == T.F16:
                raw = values.astype(np.float16).view(np.uint8)
            else:
                raw = (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
            raw = raw.reshape(1, -1)
        else:
            raw = rng.integers(0, 256, size=(num_blocks, block_bytes), dtype=np.uint8)
            for off in half_offsets:
                scale = (rng.standard_normal(num_blocks) * 0.05).astype(np.float16)
                raw[:, off:off + 2] = scale.view(np.uint8).reshape(num_blocks, 2)
        floats = dequantize(raw.reshape(-1), qtype).astype("<f4").reshape(-1)
        (out / f"{name}.bin").write_bytes(raw.tobytes())
        (out / f"{name}.f32").write_bytes(floats.tobytes())


if __name__ == "__main__":
    main()
