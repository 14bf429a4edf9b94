"""The PyTorch peer for benches/encode.rs: encode the same texts with `transformers`
BertModel on the CPU, as shoprank does (lowercase, max length, batches sorted by length,
mean pooling over the attention mask, L2 normalization), and print the wall time.

    encode_torch.py TEXTS MODEL_DIR OUT --threads 2 --batch 32 --max-length 64

TEXTS holds one text per line; OUT receives the vectors as little-endian f32 rows in
input order, so the bench can check both sides computed the same thing.
"""
import argparse
import sys
import time

import torch
from transformers import AutoTokenizer, BertModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("texts")
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--lowercase", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    with open(args.texts, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    if args.lowercase:
        texts = [t.lower() for t in texts]
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = BertModel.from_pretrained(args.model_dir).eval()

    def encode(batch):
        enc = tok(batch, padding=True, truncation=True, max_length=args.max_length,
                  return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled, dim=-1)

    with torch.inference_mode():
        encode(texts[: args.batch])  # warm-up, untimed
        start = time.perf_counter()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = [None] * len(texts)
        for k in range(0, len(order), args.batch):
            idx = order[k : k + args.batch]
            for i, v in zip(idx, encode([texts[i] for i in idx])):
                out[i] = v
        secs = time.perf_counter() - start
    torch.stack(out).numpy().astype("<f4").tofile(args.out)
    print(f"secs {secs:.6f} texts {len(texts)} torch {torch.__version__} "
          f"threads {torch.get_num_threads()}")


if __name__ == "__main__":
    sys.exit(main())
