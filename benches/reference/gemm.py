"""PyTorch (MKL / oneDNN sgemm) reference for the gate-shaped products of the `cpu_gemm`
criterion group (benches/kernels.rs), plus a square 1024 product as the machine's peak.

Shapes are m × k · k × n with the weights stored n × k, as the layers use them
(torch.matmul(a, w.t())). Prints one JSON line per shape with GFLOP/s.

    python benches/reference/gemm.py
"""

import argparse
import json
import statistics
import time

import torch

SHAPES = [
    ("gate_10x408x1200", 10, 408, 1200),
    ("inproj_300x408x1200", 300, 408, 1200),
    ("recurrent_10x300x1200", 10, 300, 1200),
    ("square_1024", 1024, 1024, 1024),
]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--seconds", type=float, default=0.5, help="time per repeat (default 0.5)")
    p.add_argument("--repeats", type=int, default=5, help="timings, median taken (default 5)")
    args = p.parse_args()
    torch.manual_seed(1)
    torch.set_num_threads(args.threads)
    for label, m, k, n in SHAPES:
        a = torch.randn(m, k)
        w = torch.randn(n, k)
        out = torch.empty(m, n)
        torch.matmul(a, w.t(), out=out)
        # Calls per repeat so that one repeat lasts about `seconds`.
        start = time.perf_counter()
        torch.matmul(a, w.t(), out=out)
        calls = max(1, int(args.seconds / max(time.perf_counter() - start, 1e-7)))
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(calls):
                torch.matmul(a, w.t(), out=out)
            elapsed = time.perf_counter() - start
            rates.append(2.0 * m * n * k * calls / elapsed / 1e9)
        record = {
            "source": "pytorch",
            "model": "gemm",
            "shape": label,
            "gflops": round(statistics.median(rates), 2),
            "gflops_max": round(max(rates), 2),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }
        print(json.dumps(record, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
