"""PyTorch reference for the contextual features of `sclstm-encoder`, on the real encoder.

Run (after `scripts/fetch-encoder.sh`):

    /root/venv-ref/bin/python benches/reference/encoder.py [--sentences 1000] [--threads 2]

It reads the first `--sentences` sentences of `datasets/conll2003/test.txt` (the words of
column 1, `-DOCSTART-` lines skipped), runs `transformers.BertModel` on
`datasets/encoders/all-MiniLM-L6-v2` in batches of 32 (padded, with an attention mask, the
words given with `is_split_into_words=True`), and prints words per second and sub-words
per second of feature extraction (every hidden state at each word's first sub-word, as
`sclstm-encoder` gives them) on `--threads` threads. The features of the first
`--keep` sentences are written to `--out` (safetensors: `features` F32 (words, 7·384),
`lengths` I64) for `cargo run --release -p sclstm-encoder --example encoder_bench -- --compare`.

Made with Python 3.11, torch 2.15.0 (CPU), transformers 5.25.0.
"""

import argparse
import os
import platform
import time

import torch
from safetensors.torch import save_file
from transformers import BertModel, BertTokenizerFast

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BATCH = 32


def read_sentences(path, limit):
    sentences, words = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                if words:
                    sentences.append(words)
                    words = []
                    if len(sentences) == limit:
                        break
                continue
            word = line.split()[0]
            if word != "-DOCSTART-":
                words.append(word)
    if words and len(sentences) < limit:
        sentences.append(words)
    return sentences


def features(model, tok, batch):
    enc = tok(batch, is_split_into_words=True, padding=True, return_tensors="pt")
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                output_hidden_states=True)
    states = torch.cat(out.hidden_states, dim=-1)  # (B, T, 7·384)
    rows = []
    for s in range(len(batch)):
        seen = set()
        for t, w in enumerate(enc.word_ids(s)):
            if w is not None and w not in seen:
                seen.add(w)
                rows.append(states[s, t])
        assert len(seen) == len(batch[s]), f"a word without sub-words in {batch[s]}"
    return torch.stack(rows), int(enc["attention_mask"].sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default=os.path.join(REPO, "datasets/encoders/all-MiniLM-L6-v2"))
    ap.add_argument("--data", default=os.path.join(REPO, "datasets/conll2003/test.txt"))
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", type=int, default=64)
    ap.add_argument("--out", default="/tmp/minilm_reference.safetensors")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = BertTokenizerFast.from_pretrained(args.encoder)
    model = BertModel.from_pretrained(args.encoder, add_pooling_layer=False).eval()
    sentences = read_sentences(args.data, args.sentences)
    words = sum(map(len, sentences))
    with torch.no_grad():
        kept, _ = features(model, tok, sentences[:args.keep])
        start = time.perf_counter()
        pieces = 0
        for i in range(0, len(sentences), BATCH):
            _, n = features(model, tok, sentences[i:i + BATCH])
            pieces += n
        elapsed = time.perf_counter() - start
    save_file({"features": kept.contiguous(),
               "lengths": torch.tensor([len(s) for s in sentences[:args.keep]])}, args.out)
    print(f"torch {torch.__version__} on {platform.processor() or platform.machine()}, "
          f"{args.threads} threads: {len(sentences)} sentences, {words} words, "
          f"{pieces} sub-words (with [CLS]/[SEP]) in {elapsed:.2f} s: "
          f"{words / elapsed:.0f} words/s, {pieces / elapsed:.0f} sub-words/s")
    print(f"wrote {args.out} ({args.keep} sentences)")


if __name__ == "__main__":
    main()
