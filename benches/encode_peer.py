"""The peers of benches/encode.rs: encode the same texts and queries with the same model
on the CPU as shoprank does (lowercase, max length, batches sorted by length, mean
pooling over the attention mask, L2 normalization) and print the timings.

    encode_peer.py TEXTS QUERIES MODEL_DIR OUT --backend torch|ort-fp32|ort-int8
                   --onnx-dir DIR --threads 2 --batch 32 --max-length 64 [--lowercase]

- torch: `transformers` BertModel.
- ort-fp32: ONNX Runtime on the model exported by torch.onnx (DIR/model.onnx, made on
  first use).
- ort-int8: ONNX Runtime on that export quantized by onnxruntime's `quantize_dynamic`
  (int8 weights per channel with reduce_range, uint8 activations quantized at run time;
  DIR/model.int8.onnx, made on first use).

TEXTS and QUERIES hold one text per line. The texts are encoded in batches on --threads
threads; then each query alone on 1 thread (tokenizer included, as in shoprank). OUT
receives the text vectors as little-endian f32 rows in input order, so the bench can check
every side computed the same thing. Prints `secs S`, `texts N` and `query_ms P50 P99`.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
from transformers import AutoTokenizer, BertModel


def export(model_dir, onnx_dir):
    """model.onnx (fp32) and model.int8.onnx under onnx_dir, made once."""
    os.makedirs(onnx_dir, exist_ok=True)
    fp32 = os.path.join(onnx_dir, "model.onnx")
    int8 = os.path.join(onnx_dir, "model.int8.onnx")
    if not os.path.exists(fp32):
        model = BertModel.from_pretrained(model_dir).eval()

        class Hidden(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.m(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

        ids = torch.ones(2, 8, dtype=torch.long)
        axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                "token_type_ids": {0: "batch", 1: "seq"},
                "last_hidden_state": {0: "batch", 1: "seq"}}
        tmp = fp32 + ".tmp"
        torch.onnx.export(Hidden(model), (ids, ids, torch.zeros_like(ids)), tmp,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
        os.replace(tmp, fp32)
    if not os.path.exists(int8):
        from onnxruntime.quantization import QuantType, quantize_dynamic
        tmp = int8 + ".tmp.onnx"
        quantize_dynamic(fp32, tmp, per_channel=True, reduce_range=True,
                         weight_type=QuantType.QInt8)
        os.replace(tmp, int8)
    return fp32, int8


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("texts")
    ap.add_argument("queries")
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--backend", choices=["torch", "ort-fp32", "ort-int8"], required=True)
    ap.add_argument("--onnx-dir", default="target/encode-bench/onnx")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--lowercase", action="store_true")
    args = ap.parse_args()

    def read(path):
        with open(path, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
        return [t.lower() for t in lines] if args.lowercase else lines

    texts, queries = read(args.texts), read(args.queries)
    tok = AutoTokenizer.from_pretrained(args.model_dir)

    def tokens(batch):
        return tok(batch, padding=True, truncation=True, max_length=args.max_length,
                   return_tensors="np")

    def pool(hidden, mask):
        mask = mask[..., None].astype(hidden.dtype)
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)

    if args.backend == "torch":
        model = BertModel.from_pretrained(args.model_dir).eval()
        version = f"torch {torch.__version__}"

        def run(enc, threads):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                t = {k: torch.from_numpy(v) for k, v in enc.items()}
                return model(**t).last_hidden_state.numpy()
    else:
        import onnxruntime as ort
        fp32, int8 = export(args.model_dir, args.onnx_dir)
        path = fp32 if args.backend == "ort-fp32" else int8
        sessions = {}
        for threads in {args.threads, 1}:
            o = ort.SessionOptions()
            o.intra_op_num_threads = threads
            o.inter_op_num_threads = 1
            o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sessions[threads] = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
        version = f"onnxruntime {ort.__version__}"

        def run(enc, threads):
            feed = {k: enc[k].astype(np.int64) for k in
                    ("input_ids", "attention_mask", "token_type_ids")}
            return sessions[threads].run(None, feed)[0]

    def encode(batch, threads):
        enc = tokens(batch)
        return pool(run(enc, threads), enc["attention_mask"])

    encode(texts[: args.batch], args.threads)  # warm-up, untimed
    start = time.perf_counter()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), 0), dtype=np.float32)
    for k in range(0, len(order), args.batch):
        idx = order[k : k + args.batch]
        v = encode([texts[i] for i in idx], args.threads)
        if out.shape[1] == 0:
            out = np.zeros((len(texts), v.shape[1]), dtype=np.float32)
        out[idx] = v
    secs = time.perf_counter() - start

    for q in queries[:20]:
        encode([q], 1)  # warm-up, untimed
    ms = []
    for q in queries:
        t = time.perf_counter()
        encode([q], 1)
        ms.append((time.perf_counter() - t) * 1e3)
    out.astype("<f4").tofile(args.out)
    print(f"secs {secs:.6f}")
    print(f"texts {len(texts)} {version} threads {args.threads}")
    print(f"query_ms {np.percentile(ms, 50):.4f} {np.percentile(ms, 99):.4f}")


if __name__ == "__main__":
    sys.exit(main())
