"""Outside oracle for the int8 inference products of `sclstm-cpu` (`--precision int8`).

Run:

    /root/.venvs/sclstm-ref/bin/python benches/reference/oracle_int8.py

It writes `crates/sclstm-cpu/tests/fixtures/int8_torch.json`: the product
`C = bias + A·W` of the int8 quad layout (`sclstm_core::Backend::write_packed`), computed
here with torch float32 and int64 tensors from the documented scheme alone:

* each column j of W (k × n) quantized with `inv_j = 127 / max_p |W[p, j]|` (f32),
  `q = round_half_even(W · inv_j)`, scale `s_j = max / 127`; an all-zero column has
  `q = 0`, `s_j = 0`;
* each row r of A quantized the same way (`t_r`), stored offset by 128 as `u = a + 128`;
* `d = float32(Σ_p u[r, p]·q[p, j] − 128·Σ_p q[p, j])` (exact in int64),
  `C[r, j] = bias[j] + d · (t_r · s_j)` in float32, in that order.

Cases (fixed seed): a recurrent-like 7 × 45 · 45 × 70 with one all-zero row of A and one
all-zero column of W; a tall 20 × 101 · 101 × 33 (k not a multiple of 4); a tie case whose
values land on halves (x.5 · 127 / 127). Values are written as f32 bit patterns
(`*_bits`) so that the comparison is exact.

Made with Python 3.11, torch 2.15.0 (CPU).
"""

import importlib.metadata
import json
import pathlib

import torch

OUT = pathlib.Path(__file__).resolve().parents[2] / "crates/sclstm-cpu/tests/fixtures/int8_torch.json"


def quantize(x, dim):
    """Symmetric int8 quantization along `dim`: (q as int64, scale as f32)."""
    largest = x.abs().amax(dim=dim, keepdim=True)
    inv = torch.where(largest > 0, torch.tensor(127.0, dtype=torch.float32) / largest, torch.zeros_like(largest))
    scale = largest / torch.tensor(127.0, dtype=torch.float32)
    q = torch.round(x * inv).to(torch.int64)  # torch.round: half to even
    return q, scale


def product(a, w, bias):
    qa, t = quantize(a, 1)  # (m, k), (m, 1)
    qw, s = quantize(w, 0)  # (k, n), (1, n)
    u = qa + 128
    d = (u @ qw - 128 * qw.sum(dim=0, keepdim=True)).to(torch.float32)
    return bias.unsqueeze(0) + d * (t * s)


def bits(x):
    return x.contiguous().view(torch.int32).flatten().tolist()


def case(a, w, bias):
    m, k = a.shape
    n = w.shape[1]
    c = product(a, w, bias)
    return {
        "m": m,
        "n": n,
        "k": k,
        "a_bits": bits(a),
        "w_bits": bits(w),
        "bias_bits": bits(bias),
        "c_bits": bits(c),
    }


def main():
    g = torch.Generator().manual_seed(17)
    rand = lambda *shape: torch.rand(*shape, generator=g, dtype=torch.float32) * 2 - 1
    cases = {}
    a, w, bias = rand(7, 45), rand(45, 70), rand(70)
    a[3] = 0.0
    w[:, 11] = 0.0
    cases["recurrent"] = case(a, w, bias)
    cases["tall"] = case(rand(20, 101) * 3, rand(101, 33) * 0.1, rand(33))
    # Halves: with a row maximum of 127 the multiplier is exactly 1, so x.5 values tie.
    halves = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, 3.5, 4.0]], dtype=torch.float32)
    cases["ties"] = case(halves, rand(8, 5), rand(5))
    meta = {"torch": torch.__version__, "script": "benches/reference/oracle_int8.py"}
    try:
        meta["numpy"] = importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        pass
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"meta": meta, "cases": cases}, indent=None) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
