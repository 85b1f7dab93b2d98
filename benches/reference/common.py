"""Shared pieces of the PyTorch reference benchmarks.

The paper configuration (SC-LSTM paper, sections 3-4) with the inputs the sclstm
models use: a 50-d word embedding (GloVe 6B 50d, fine-tuned) concatenated with 8
one-hot capitalization features (58 input dims), 3 bidirectional layers of hidden size
300, batches of 10 sentences, dropout 0.5, Adam (lr 1e-3), gradient clipping at 5.

Batches are synthetic (random word ids, capitalization classes and tags) but their
sentence lengths are drawn from the shipped training corpora, and the tag-set sizes and
the vocabulary size are read from the shipped files, so the work per batch matches
training on the real data.
"""

import argparse
import gzip
import json
import os
import platform
import random
import statistics
import sys
import time

import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATASETS = os.path.join(REPO, "datasets")

TASKS = ("ner", "chunk", "pos")
EMBED_DIM = 50
CAPS_DIM = 8
INPUT_DIM = EMBED_DIM + CAPS_DIM
HIDDEN = 300
LAYERS = 3
BATCH = 10
DROPOUT = 0.5
LR = 1e-3
CLIP = 5.0
# Loss weight of each task (paper section 4.3: NER weighted 3, the others 1).
LAMBDA = {"ner": 3.0, "chunk": 1.0, "pos": 1.0}


def _conll_sentences(path, col):
    """Sentences of a CoNLL column file as lists of (word, tag in column `col`)."""
    sents, cur = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                if cur:
                    sents.append(cur)
                cur = []
                continue
            parts = line.split()
            if parts[0] == "-DOCSTART-":
                continue
            cur.append((parts[0], parts[col]))
    if cur:
        sents.append(cur)
    return sents


def _conllu_sentences(path):
    """Sentences of a CoNLL-U file as lists of (form, UPOS); skips comments, ranges, empty nodes."""
    sents, cur = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                if cur:
                    sents.append(cur)
                cur = []
                continue
            if line.startswith("#"):
                continue
            cols = line.split("\t")
            if "-" in cols[0] or "." in cols[0]:
                continue
            cur.append((cols[1], cols[3]))
    if cur:
        sents.append(cur)
    return sents


def _bio_size(tags):
    """Tag-set size in BIO (IOB2): O plus B-/I- per chunk or entity type."""
    types = {t[2:] for t in tags if t != "O"}
    return 1 + 2 * len(types)


class Corpus:
    """Sentence lengths, tag-set sizes and vocabulary size of the shipped training data."""

    def __init__(self, root=DATASETS):
        ner = _conll_sentences(os.path.join(root, "conll2003", "train.txt"), 3)
        chunk = _conll_sentences(os.path.join(root, "conll2000", "train.txt"), 2)
        pos = _conllu_sentences(os.path.join(root, "ud-en-ewt", "train.conllu"))
        data = {"ner": ner, "chunk": chunk, "pos": pos}
        self.lengths = {k: [len(s) for s in v] for k, v in data.items()}
        self.tags = {
            "ner": _bio_size(t for s in ner for _, t in s),
            "chunk": _bio_size(t for s in chunk for _, t in s),
            "pos": len({t for s in pos for _, t in s}),
        }
        words = {w.lower() for v in data.values() for s in v for w, _ in s}
        glove = set()
        gpath = os.path.join(root, "glove", "glove.6B.50d.filtered.txt.gz")
        with gzip.open(gpath, "rt", encoding="utf-8") as f:
            for line in f:
                glove.add(line.split(" ", 1)[0])
        # GloVe rows plus training words GloVe lacks, plus padding and unknown.
        self.vocab = len(glove | words) + 2

    def describe(self):
        """A JSON-able summary for the output line."""
        return {
            "tags": self.tags,
            "vocab": self.vocab,
            "sentences": {k: len(v) for k, v in self.lengths.items()},
            "mean_len": {k: round(statistics.mean(v), 2) for k, v in self.lengths.items()},
        }


class Batch:
    """One padded, time-major batch of one task."""

    def __init__(self, task, lens, vocab, n_tags, gen):
        self.task = task
        self.lens = torch.tensor(lens, dtype=torch.long)
        steps, b = max(lens), len(lens)
        self.steps = steps
        self.tokens = sum(lens)
        # mask[t, b] = 1 inside sentence b.
        self.mask = torch.arange(steps).unsqueeze(1) < self.lens.unsqueeze(0)
        self.words = torch.randint(2, vocab, (steps, b), generator=gen) * self.mask
        caps = torch.randint(0, CAPS_DIM, (steps, b), generator=gen)
        self.caps = torch.nn.functional.one_hot(caps, CAPS_DIM).float()
        self.caps = self.caps * self.mask.unsqueeze(2)
        tags = torch.randint(0, n_tags, (steps, b), generator=gen)
        # Padding positions carry -100, PyTorch's ignore_index.
        self.tags = torch.where(self.mask, tags, torch.full_like(tags, -100))
        # Per-sentence reversal index for the reverse direction: position t of
        # sentence b reads position lens[b]-1-t (padding maps onto itself).
        t = torch.arange(steps).unsqueeze(1).expand(steps, b)
        rev = self.lens.unsqueeze(0) - 1 - t
        self.rev = torch.where(self.mask, rev, t)


def training_batches(corpus, n, seed):
    """`n` batches as Algorithm 1 draws them: a random task, then 10 of its sentences."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        task = rng.choice(TASKS)
        lens = rng.choices(corpus.lengths[task], k=BATCH)
        out.append(Batch(task, lens, corpus.vocab, corpus.tags[task], gen))
    return out


def inference_batches(corpus, n, seed, sort, size=BATCH):
    """`n` batches of `size` sentences drawn from all three corpora, in draw order or
    length-sorted (`sort`), each tagged for all three tasks."""
    rng = random.Random(seed + 1)
    gen = torch.Generator().manual_seed(seed + 1)
    lens = [rng.choice(corpus.lengths[rng.choice(TASKS)]) for _ in range(n * size)]
    if sort:
        lens.sort(reverse=True)
    return [
        Batch("all", lens[i : i + size], corpus.vocab, 1, gen)
        for i in range(0, len(lens), size)
    ]


def base_parser(description):
    """Command-line options every reference script shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--warmup", type=int, default=5, help="untimed batches first (default 5)")
    p.add_argument("--train-batches", type=int, default=60, help="timed training batches (default 60)")
    p.add_argument("--infer-batches", type=int, default=100, help="timed inference batches (default 100)")
    p.add_argument("--seed", type=int, default=1, help="seed of the batch draws and the weights")
    p.add_argument(
        "--infer-batch",
        type=int,
        default=BATCH,
        help=f"sentences per inference batch (default {BATCH}, the training batch; "
        "sclstm tags in batches of up to 64 sentences and 2,048 tokens)",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="also time inference under torch.autocast('cpu', dtype=torch.bfloat16) "
        "(figures infer_bf16_tokens_per_s, infer_sorted_bf16_tokens_per_s)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="also time inference of the model with its nn.Linear and nn.LSTM layers "
        "dynamically quantized to int8 (torch.ao.quantization.quantize_dynamic; figures "
        "infer_int8_tokens_per_s, infer_sorted_int8_tokens_per_s)",
    )
    return p


def setup(args):
    """Seeds and thread settings; returns the corpus statistics."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    return Corpus()


def time_training(step, batches, warmup):
    """Runs `step` on each batch (the first `warmup` untimed); returns tokens/s."""
    for b in batches[:warmup]:
        step(b)
    timed = batches[warmup:]
    start = time.perf_counter()
    for b in timed:
        step(b)
    elapsed = time.perf_counter() - start
    return sum(b.tokens for b in timed) / elapsed


def time_inference(tag, batches, warmup):
    """Runs `tag` on each batch under no_grad (the first `warmup` untimed); returns tokens/s."""
    with torch.no_grad():
        for b in batches[:warmup]:
            tag(b)
        timed = batches[warmup:]
        start = time.perf_counter()
        for b in timed:
            tag(b)
        elapsed = time.perf_counter() - start
    return sum(b.tokens for b in timed) / elapsed


def emit(record, args):
    """Prints one JSON line with the measurement and the environment."""
    record.update(
        {
            "source": "pytorch",
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "seed": args.seed,
        }
    )
    print(json.dumps(record, sort_keys=True))
    sys.stdout.flush()


class Heads(torch.nn.Module):
    """One classifier per task on top of the encoder: softmax (paper Eq. 5-6) or, with
    `crf`, a pytorch-crf linear-chain CRF for the BIO tasks (NER, chunking)."""

    def __init__(self, in_dim, tags, crf):
        super().__init__()
        self.linear = torch.nn.ModuleDict({k: torch.nn.Linear(in_dim, tags[k]) for k in TASKS})
        self.crf = torch.nn.ModuleDict()
        if crf:
            from torchcrf import CRF

            for k in ("ner", "chunk"):
                self.crf[k] = CRF(tags[k])

    def loss(self, task, feats, b):
        """Weighted loss of one task's batch; `feats` is (T, B, in_dim)."""
        scores = self.linear[task](feats)
        if task in self.crf:
            gold = b.tags.clamp(min=0)
            nll = -self.crf[task](scores, gold, mask=b.mask, reduction="mean")
            return LAMBDA[task] * nll
        flat = scores.reshape(-1, scores.shape[-1])
        return LAMBDA[task] * torch.nn.functional.cross_entropy(flat, b.tags.reshape(-1))

    def tag(self, task, feats, b):
        """Predicted tags of one task: argmax, or Viterbi for a CRF head."""
        scores = self.linear[task](feats)
        if task in self.crf:
            return self.crf[task].decode(scores, mask=b.mask)
        return scores.argmax(-1)


def train_step(model, opt, params):
    """Returns the training step: forward, backward, clip at 5, Adam update."""

    def step(b):
        opt.zero_grad(set_to_none=True)
        loss = model.loss(b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()

    return step


def run(model, args, corpus, record):
    """Measures training and inference tokens/s of `model` and prints the JSON line.

    `model.loss(batch)` is the loss of one task's batch; `model.tag(batch)` tags a
    batch for every task."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=LR)
    train = training_batches(corpus, args.warmup + args.train_batches, args.seed)
    model.train()
    record["train_tokens_per_s"] = time_training(train_step(model, opt, params), train, args.warmup)
    model.eval()
    quantized = None
    if args.int8:
        quantized = torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear, torch.nn.LSTM}, dtype=torch.qint8
        )
    for key, sort in (("infer_tokens_per_s", False), ("infer_sorted_tokens_per_s", True)):
        batches = inference_batches(
            corpus, args.warmup + args.infer_batches, args.seed, sort, args.infer_batch
        )
        record[key] = time_inference(model.tag, batches, args.warmup)
        if args.bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = time_inference(model.tag, batches, args.warmup)
            record[key.replace("_tokens", "_bf16_tokens")] = round(bf16, 1)
        if quantized is not None:
            int8 = time_inference(quantized.tag, batches, args.warmup)
            record[key.replace("_tokens", "_int8_tokens")] = round(int8, 1)
    record["train_batches"] = args.train_batches
    record["infer_batches"] = args.infer_batches
    record["infer_batch"] = args.infer_batch
    record["corpus"] = corpus.describe()
    record["params"] = sum(p.numel() for p in params)
    for key in ("train_tokens_per_s", "infer_tokens_per_s", "infer_sorted_tokens_per_s"):
        record[key] = round(record[key], 1)
    emit(record, args)
