#!/usr/bin/env python3
"""Write small valid GGUF files as seeds for the parser fuzz target.

usage: scripts/fuzz-seeds.py OUT_DIR
"""
import struct
import sys

out = sys.argv[1]


def s(x):
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, ty, payload):
    return s(key) + struct.pack("<I", ty) + payload


def gguf(version, kvs, tensors, align=32):
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs)
    data, infos = b"", b""
    for name, dims, ty, blob in tensors:
        data += b"\0" * (-len(data) % align)
        infos += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", ty, len(data))
        data += blob
    body = head + infos
    return body + b"\0" * (-len(body) % align) + data


tokens = ["h", "e", "l", "o", "he", "ll", "hello", "<|im_start|>"]
vocab = struct.pack("<IQ", 8, len(tokens)) + b"".join(s(t) for t in tokens)
types = struct.pack("<IQ", 5, len(tokens)) + b"".join(struct.pack("<i", 3 if t.startswith("<|") else 1) for t in tokens)
merges = struct.pack("<IQ", 8, 3) + s("h e") + s("l l") + s("he ll")
seeds = {
    "empty_v3": gguf(3, [], []),
    "empty_v2": gguf(2, [], []),
    "metadata": gguf(3, [
        kv("general.architecture", 8, s("qwen2")),
        kv("general.alignment", 4, struct.pack("<I", 64)),
        kv("qwen2.block_count", 4, struct.pack("<I", 1)),
        kv("qwen2.embedding_length", 4, struct.pack("<I", 32)),
        kv("f", 6, struct.pack("<f", 1.5)), kv("b", 7, b"\1"), kv("i64", 11, struct.pack("<q", -5)),
        kv("f64", 12, struct.pack("<d", 2.0)), kv("u8", 0, b"\7"), kv("i16", 3, struct.pack("<h", -3)),
    ], [], align=64),
    "tokenizer": gguf(3, [kv("tokenizer.ggml.model", 8, s("gpt2")), kv("tokenizer.ggml.pre", 8, s("qwen2")),
                          kv("tokenizer.ggml.tokens", 9, vocab),
                          kv("tokenizer.ggml.token_type", 9, types), kv("tokenizer.ggml.merges", 9, merges),
                          kv("tokenizer.ggml.eos_token_id", 4, struct.pack("<I", 7))], []),
    "tensors": gguf(3, [], [("a", [4, 2], 0, struct.pack("<8f", *range(8))),
                            ("q8", [32], 8, b"\0\x3c" + bytes(range(32))),
                            ("q4k", [256], 12, bytes(144))]),
}
for name, blob in seeds.items():
    with open(f"{out}/{name}.gguf", "wb") as f:
        f.write(blob)
print(f"wrote {len(seeds)} seeds to {out}")
