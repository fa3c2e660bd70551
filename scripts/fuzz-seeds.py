#!/usr/bin/env python3
"""Write seeds for the GGUF parser fuzz target: small valid files, and hostile
headers whose counts are as large as the input allows or far larger (the
parser must refuse them by their size on disk or in memory, never abort).

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

# Hostile headers, each within the fuzzer's 64 KiB -max_len.
ROOM = 60000


def counts(n_tensors, n_kv):
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


def u8_array(count, payload=b""):
    return counts(0, 1) + s("arr") + struct.pack("<IIQ", 9, 0, count) + payload


seeds.update({
    # The cases in miniature: 1.2 G and 480 M u8 values, 833 M tensors.
    "hostile_array_1g2": u8_array(1_200_000_000, bytes(64)),
    "hostile_array_480m": u8_array(480_000_000, bytes(64)),
    "hostile_tensor_count_833m": counts(833_000_000, 0) + bytes(64),
    # Counts exactly as large as the bytes after them allow.
    "max_u8_array": u8_array(ROOM, bytes(ROOM)),
    "max_string_array": counts(0, 1) + s("arr") + struct.pack("<IIQ", 9, 8, ROOM // 8) + bytes(ROOM // 8 * 8),
    "max_nested_arrays": counts(0, 1) + s("arr") + struct.pack("<IIQ", 9, 9, ROOM // 12)
    + struct.pack("<IQ", 0, 0) * (ROOM // 12),
    "max_metadata_count": counts(0, ROOM // 13) + bytes(ROOM // 13 * 13),
    "max_tensor_count": counts(ROOM // 24, 0) + bytes(ROOM // 24 * 24),
    "max_string_length": counts(0, 1) + struct.pack("<Q", ROOM) + b"k" * ROOM,
})

for name, blob in seeds.items():
    with open(f"{out}/{name}.gguf", "wb") as f:
        f.write(blob)
print(f"wrote {len(seeds)} seeds to {out}")
