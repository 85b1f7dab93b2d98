"""Summarises the JSON lines written by compare.sh: median (and min–max) of each figure
over the rounds, and the sclstm / PyTorch ratio of the medians.

Each input line is one JSON object with at least `source` (`pytorch`, `sclstm` or
`criterion`) and `model`; figures are read by name:

  train_tokens_per_s, infer_tokens_per_s     sclstm bench and the model scripts
  infer_sorted_tokens_per_s                  model scripts, length-sorted batches
  infer_sorted_bf16_tokens_per_s             the same under PyTorch's bf16 autocast (--bf16)
  infer_sorted_int8_tokens_per_s             the same, layers dynamically quantized (--int8)
  nll_grad_tokens_per_s, viterbi_tokens_per_s crf.py and the criterion cpu_crf group

For sclstm lines the names may also appear nested (`{"train": {"tokens_per_s": …}}`).

    python benches/reference/summarize.py results.jsonl
"""

import json
import statistics
import sys

# (row label, reference selector, reference figure, sclstm selector, sclstm figure)
ROWS = [
    ("LSTM-s training (packed)", ("lstm-s", "packed"), "train_tokens_per_s", ("lstm-s", None), "train_tokens_per_s"),
    ("LSTM-s training (padded)", ("lstm-s", "padded"), "train_tokens_per_s", ("lstm-s", None), "train_tokens_per_s"),
    ("SC-LSTM training", ("sc-lstm", None), "train_tokens_per_s", ("sc-lstm", None), "train_tokens_per_s"),
    ("LSTM-s inference (packed)", ("lstm-s", "packed"), "infer_tokens_per_s", ("lstm-s", None), "infer_tokens_per_s"),
    ("LSTM-s inference (packed, sorted)", ("lstm-s", "packed"), "infer_sorted_tokens_per_s", ("lstm-s", None), "infer_tokens_per_s"),
    ("SC-LSTM inference", ("sc-lstm", None), "infer_tokens_per_s", ("sc-lstm", None), "infer_tokens_per_s"),
    ("SC-LSTM inference (sorted)", ("sc-lstm", None), "infer_sorted_tokens_per_s", ("sc-lstm", None), "infer_tokens_per_s"),
    ("LSTM-s inference (packed, sorted), PyTorch bf16 autocast", ("lstm-s", "packed"), "infer_sorted_bf16_tokens_per_s", ("lstm-s", None), "infer_tokens_per_s"),
    ("SC-LSTM inference (sorted), PyTorch bf16 autocast", ("sc-lstm", None), "infer_sorted_bf16_tokens_per_s", ("sc-lstm", None), "infer_tokens_per_s"),
    ("LSTM-s inference (packed, sorted), PyTorch int8 dynamic quantization", ("lstm-s", "packed"), "infer_sorted_int8_tokens_per_s", ("lstm-s", None), "infer_tokens_per_s"),
    ("SC-LSTM inference (sorted), PyTorch int8 dynamic quantization", ("sc-lstm", None), "infer_sorted_int8_tokens_per_s", ("sc-lstm", None), "infer_tokens_per_s"),
    ("CRF NLL+grad, 9 tags", ("crf", 9), "nll_grad_tokens_per_s", ("crf", 9), "nll_grad_tokens_per_s"),
    ("CRF NLL+grad, 23 tags", ("crf", 23), "nll_grad_tokens_per_s", ("crf", 23), "nll_grad_tokens_per_s"),
    ("CRF Viterbi, 9 tags", ("crf", 9), "viterbi_tokens_per_s", ("crf", 9), "viterbi_tokens_per_s"),
    ("CRF Viterbi, 23 tags", ("crf", 23), "viterbi_tokens_per_s", ("crf", 23), "viterbi_tokens_per_s"),
]


def flatten(obj, prefix=""):
    """{"a": {"b": 1}} → {"a.b": 1, "a_b": 1}."""
    out = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            for sub, val in flatten(v).items():
                out[f"{key}.{sub}"] = val
                out[f"{key}_{sub}"] = val
        else:
            out[key] = v
    return out


def matches(rec, sel):
    """Whether a record belongs to a (model, variant-or-tags) selector."""
    model, detail = sel
    if rec.get("model") != model:
        return False
    if detail is None:
        return True
    return rec.get("variant") == detail or rec.get("tags") == detail


def values(records, sources, sel, figure):
    """Every value of `figure` in the records of the given sources matching `sel`."""
    out = []
    for rec in records:
        if rec.get("source") in sources and matches(rec, sel):
            v = flatten(rec).get(figure)
            if isinstance(v, (int, float)):
                out.append(float(v))
    return out


def fmt(vals, digits=0):
    """'median (min–max, n=…)' with `digits` decimals, or '–'."""
    if not vals:
        return "–"
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{med:,.{digits}f}"
    lo, hi = min(vals), max(vals)
    return f"{med:,.{digits}f} ({lo:,.{digits}f}–{hi:,.{digits}f}, n={len(vals)})"


def main():
    records = []
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                records.append(json.loads(line))
    precisions = sorted({r["infer_precision"] for r in records if "infer_precision" in r})
    if precisions:
        print(f"sclstm inference products: {', '.join(precisions)}")
    # Which instruction sets ran: sclstm's kernel set, PyTorch's ATen dispatch level.
    for label, source, key in (
        ("sclstm kernels", "sclstm", "kernels"),
        ("PyTorch CPU capability (ATen)", "pytorch", "cpu_capability"),
    ):
        seen = sorted({r[key] for r in records if r.get("source") == source and key in r})
        if seen:
            print(f"{label}: {', '.join(seen)}")
    print("| what | PyTorch tokens/s | sclstm tokens/s | sclstm / PyTorch |")
    print("|---|---|---|---|")
    for label, ref_sel, ref_fig, our_sel, our_fig in ROWS:
        ref = values(records, ("pytorch",), ref_sel, ref_fig)
        ours = values(records, ("sclstm", "criterion"), our_sel, our_fig)
        # The bf16 / int8 rows only where the PyTorch scripts timed that precision.
        if not ours and not ref or not ref and ("_bf16_" in ref_fig or "_int8_" in ref_fig):
            continue
        ratio = "–"
        if ref and ours:
            ratio = f"{statistics.median(ours) / statistics.median(ref):.2f}×"
        print(f"| {label} | {fmt(ref)} | {fmt(ours)} | {ratio} |")
    gemm = [r for r in records if r.get("model") == "gemm"]
    if gemm:
        print()
        print("| PyTorch sgemm shape | GFLOP/s (median of runs) |")
        print("|---|---|")
        shapes = list(dict.fromkeys(r["shape"] for r in gemm))
        for shape in shapes:
            print(f"| {shape} | {fmt([r['gflops'] for r in gemm if r['shape'] == shape], 1)} |")


if __name__ == "__main__":
    main()
