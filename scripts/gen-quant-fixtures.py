#!/usr/bin/env python3
"""Generate bit-exactness fixtures for src/quant from independent references.

Dequantization and Q8_0 quantization come from the registry's `gguf` package
(gguf.quants); Q8_K activation quantization comes from llama.cpp's own
`quantize_row_q8_K_ref` in libggml-base.so (gguf.quants has no Q8_K), and the
Q8_0 rounding llama.cpp's CPU backend uses at run time from `quantize_row_q8_0`
in libggml-cpu.so (next to libggml-base.so).
Blocks are taken from the real 0.5B model where it has the type, and
generated at random (with sane f16 scales) for every type.

usage: python3 scripts/gen-quant-fixtures.py MODEL.gguf LIBGGML_BASE.so OUT_DIR
Writes NAME.in (raw input) and NAME.out (expected output) pairs.
"""
import ctypes
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as T, quants

model, libpath, out = sys.argv[1:4]
rng = np.random.default_rng(20261121)
BLOCK = {T.Q4_0: (32, 18), T.Q5_0: (32, 22), T.Q8_0: (32, 34), T.Q4_K: (256, 144),
         T.Q5_K: (256, 176), T.Q6_K: (256, 210), T.F16: (1, 2), T.BF16: (1, 2), T.F32: (1, 4)}
# Byte offsets of f16 scale fields in each block, overwritten with sane values in random blocks.
F16_FIELDS = {T.Q4_0: [0], T.Q5_0: [0], T.Q8_0: [0], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}


def write(name, data_in, data_out):
    with open(f"{out}/{name}.in", "wb") as f:
        f.write(np.ascontiguousarray(data_in).tobytes())
    with open(f"{out}/{name}.out", "wb") as f:
        f.write(np.ascontiguousarray(data_out).tobytes())
    print(name, len(data_in.tobytes()), "bytes in")


def random_blocks(t, n_blocks):
    elems, size = BLOCK[t]
    if t == T.F32:
        return rng.standard_normal(n_blocks).astype(np.float32).view(np.uint8)
    if t == T.F16:
        return rng.standard_normal(n_blocks).astype(np.float16).view(np.uint8)
    if t == T.BF16:
        return (rng.standard_normal(n_blocks).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in F16_FIELDS[t]:
        scales = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
        raw[:, off:off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1)


for t in BLOCK:
    raw = random_blocks(t, 24 if BLOCK[t][0] == 256 else 96)
    write(f"random_{t.name}", raw, quants.dequantize(raw, t).astype(np.float32))

reader = GGUFReader(model)
seen = set()
for tensor in reader.tensors:
    t = tensor.tensor_type
    if t in seen or t not in BLOCK:
        continue
    seen.add(t)
    elems, size = BLOCK[t]
    row = np.asarray(tensor.data).reshape(-1).view(np.uint8)
    n_bytes = min(len(row), (4096 // elems) * size)
    raw = row[:n_bytes]
    write(f"model_{t.name}", raw, quants.dequantize(raw, t).astype(np.float32))
    print("  from", tensor.name)

# Activation quantization: Q8_0 from gguf.quants, Q8_K from llama.cpp's reference.
x = np.concatenate([rng.standard_normal(2048) * 3, np.zeros(256), np.full(256, 0.5), rng.standard_normal(256) * 1e-3]).astype(np.float32)
x[5] = 7.5  # a tie at the block's maximum
write("quantize_Q8_0", x, quants.quantize(x, T.Q8_0))

lib = ctypes.CDLL(libpath)
lib.quantize_row_q8_K_ref.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
y = np.zeros(len(x) // 256 * 292, dtype=np.uint8)
lib.quantize_row_q8_K_ref(x.ctypes.data, y.ctypes.data, len(x))
write("quantize_Q8_K", x, y)

import os
cpu = ctypes.CDLL(os.path.join(os.path.dirname(libpath), "libggml-cpu.so"))
cpu.quantize_row_q8_0.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
y = np.zeros(len(x) // 32 * 34, dtype=np.uint8)
cpu.quantize_row_q8_0(x.ctypes.data, y.ctypes.data, len(x))
write("quantize_Q8_0_cpu", x, y)
