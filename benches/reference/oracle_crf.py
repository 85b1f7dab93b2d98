"""Outside oracle for the linear-chain CRF of `sclstm-layers`: pytorch-crf.

Run:

    /root/venv-ref/bin/python benches/reference/oracle_crf.py

It writes `crates/sclstm-layers/tests/fixtures/crf_torchcrf.json`: two cases of
`torchcrf.CRF(5)` (time-major, T 6, B 4, lengths 6 3 1 5, masks for the padding):

* `moderate`: random emissions, transitions, start and end scores (the CRF's fast
  scaled path);
* `constrained`: the same with six transitions at -1e4 (hard constraints: the CRF's
  log-space path).

pytorch-crf's parameters map one to one onto `CrfWeights`: `transitions[i, j]` scores
tag i followed by tag j (`transitions`), `start_transitions` is `start`,
`end_transitions` is `end`. Per case the fixture holds the inputs (`emissions` as
(T*B, L) rows t*B + b, `tags` with 0 on padding, `lens`), the per-sentence log partition
(`log_z`, from `CRF._compute_normalizer`), the negative log-likelihood for
`reduction="sum"` and `"mean"` (pytorch-crf's mean is over sentences, as
`CrfReduction::Mean`), the gradients of each NLL w.r.t. emissions, transitions, start and
end (`grad.<reduction>.<name>`), and the Viterbi paths of `CRF.decode`. float64, fixed
seed; versions in `meta`.

Made with Python 3.11, torch 2.15.0 (CPU), pytorch-crf 0.7.2.
"""

import importlib.metadata
import json
import pathlib
import sys

import torch
from torchcrf import CRF

T, B, L = 6, 4, 5
LENS = [6, 3, 1, 5]
OUT = pathlib.Path(__file__).resolve().parents[2] / "crates/sclstm-layers/tests/fixtures/crf_torchcrf.json"


def tensor(t):
    t = t.detach()
    if t.dim() == 1:
        t = t.reshape(1, -1)
    return {"shape": list(t.shape), "data": t.reshape(-1).tolist()}


def case(constrained):
    crf = CRF(L).double()
    with torch.no_grad():
        crf.transitions.uniform_(-2, 2)
        crf.start_transitions.uniform_(-1, 1)
        crf.end_transitions.uniform_(-1, 1)
        if constrained:
            for i, j in [(0, 1), (1, 1), (2, 4), (3, 0), (4, 2), (4, 4)]:
                crf.transitions[i, j] = -1e4
    emissions = torch.randn(T, B, L, dtype=torch.float64) * 2
    mask = torch.zeros(T, B, dtype=torch.bool)
    tags = torch.zeros(T, B, dtype=torch.long)
    for b, n in enumerate(LENS):
        mask[:n, b] = True
        # Gold paths avoid the constrained transitions (a path through one scores ~-1e4).
        prev = None
        for t in range(n):
            y = int(torch.randint(L, ()))
            while constrained and prev is not None and crf.transitions[prev, y] < -1e3:
                y = int(torch.randint(L, ()))
            tags[t, b] = y
            prev = y
    out = {
        "emissions": tensor(emissions.reshape(T * B, L)),
        "transitions": tensor(crf.transitions),
        "start": tensor(crf.start_transitions),
        "end": tensor(crf.end_transitions),
        "tags": tags.reshape(-1).tolist(),
        "lens": LENS,
        "steps": T,
    }
    with torch.no_grad():
        out["log_z"] = crf._compute_normalizer(emissions, mask).tolist()
    out["viterbi"] = crf.decode(emissions, mask)
    for reduction in ("sum", "mean"):
        e = emissions.clone().requires_grad_(True)
        crf.zero_grad()
        nll = -crf(e, tags, mask, reduction=reduction)
        nll.backward()
        out[f"nll.{reduction}"] = nll.item()
        for name, g in (
            ("emissions", e.grad.reshape(T * B, L)),
            ("transitions", crf.transitions.grad),
            ("start", crf.start_transitions.grad),
            ("end", crf.end_transitions.grad),
        ):
            out[f"grad.{reduction}.{name}"] = tensor(g)
    return out


def main():
    torch.manual_seed(3)
    fixture = {
        "meta": {
            "what": "torchcrf.CRF log-likelihood (negated), its gradients, log Z and Viterbi paths",
            "script": "benches/reference/oracle_crf.py",
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "pytorch-crf": importlib.metadata.version("pytorch-crf"),
            "dtype": "float64",
        },
        "cases": {"moderate": case(False), "constrained": case(True)},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
