"""PyTorch reference for the CRF head: pytorch-crf's NLL + backward and Viterbi decoding
at 9 tags (NER, BIO) and 23 tags (chunking, BIO), T 30, batch 10, every sentence full.

Prints one JSON line per tag count with tokens/s (T·B tokens per call) and ms per call,
the same shapes as the `cpu_crf` criterion group (benches/kernels.rs).

    python benches/reference/crf.py
"""

import argparse
import json
import platform
import statistics
import time

import torch
from torchcrf import CRF

STEPS = 30
BATCH = 10


def per_call(fn, calls, repeats):
    """Median over `repeats` of the mean seconds per call of `fn` over `calls` calls."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--tags", type=int, nargs="+", default=[9, 23])
    p.add_argument("--calls", type=int, default=50, help="calls per timing (default 50)")
    p.add_argument("--repeats", type=int, default=5, help="timings, median taken (default 5)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    tokens = STEPS * BATCH
    for n_tags in args.tags:
        crf = CRF(n_tags)
        emissions = torch.randn(STEPS, BATCH, n_tags, requires_grad=True)
        tags = torch.randint(0, n_tags, (STEPS, BATCH))
        mask = torch.ones(STEPS, BATCH, dtype=torch.bool)

        def nll_grad():
            crf.zero_grad(set_to_none=True)
            emissions.grad = None
            nll = -crf(emissions, tags, mask=mask, reduction="sum")
            nll.backward()

        def viterbi():
            with torch.no_grad():
                crf.decode(emissions, mask=mask)

        nll_s = per_call(nll_grad, args.calls, args.repeats)
        vit_s = per_call(viterbi, args.calls, args.repeats)
        record = {
            "source": "pytorch",
            "model": "crf",
            "tags": n_tags,
            "steps": STEPS,
            "batch": BATCH,
            "nll_grad_tokens_per_s": round(tokens / nll_s, 1),
            "nll_grad_ms": round(nll_s * 1e3, 3),
            "viterbi_tokens_per_s": round(tokens / vit_s, 1),
            "viterbi_ms": round(vit_s * 1e3, 3),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
        }
        print(json.dumps(record, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
