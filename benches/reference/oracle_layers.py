"""Outside oracles for the LSTM and SC-LSTM layers of `sclstm-layers`.

Run:

    /root/venv-ref/bin/python benches/reference/oracle_layers.py

It writes

* `crates/sclstm-layers/tests/fixtures/lstm_torch.json`: one bidirectional
  `torch.nn.LSTM` layer (D 3, H 4, T 6, B 4, lengths 5 2 4 1, run through
  `pack_padded_sequence`, so the reverse direction walks each sentence from its own end
  and padding steps produce zeros), and
* `crates/sclstm-layers/tests/fixtures/sc_lstm_torch.json`: an explicit SC-LSTM layer
  (paper Eq. 1-3 plus a bias per gate) written as a plain loop, bidirectional, with two
  task gates: task 0 reads the layer's input x, task 1 a separate input x^1 (D_k 2).
  Its h is asserted equal to `torch.nn.LSTM`'s on the same cell weights.

Each fixture holds, under the names of `ScLstmArgs::input_names` (`x`, `x^1`,
`fwd.w_ih`, ..., `task1.bwd.b`), the op's inputs (bias `b = b_ih + b_hh`), the output
`out` in the layer's column layout `[h_fwd, h_bwd, q0_fwd, q0_bwd, q1_fwd, q1_bwd]`
(time-major rows t*B + b), the fixed loss weights `d_out` and, under `grad.<name>`,
the gradients of `sum(out * d_out)` w.r.t. every input, all in float64. Fixed seeds; the
library versions are recorded in each file's `meta`.

Made with Python 3.11, torch 2.15.0 (CPU).
"""

import json
import pathlib
import sys

import torch

T, B, D, H = 6, 4, 3, 4
LENS = [5, 2, 4, 1]
D1 = 2
OUT_DIR = pathlib.Path(__file__).resolve().parents[2] / "crates/sclstm-layers/tests/fixtures"


def meta(what):
    return {
        "what": what,
        "script": "benches/reference/oracle_layers.py",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "dtype": "float64",
        "steps": T,
        "lens": LENS,
    }


def tensor(t):
    t = t.detach()
    if t.dim() == 1:
        t = t.reshape(1, -1)
    return {"shape": list(t.shape), "data": t.reshape(-1).tolist()}


def mask():
    """(T, B, 1): 1 inside a sentence, 0 on padding."""
    m = torch.zeros(T, B, 1, dtype=torch.float64)
    for b, n in enumerate(LENS):
        m[:n, b] = 1.0
    return m


def torch_bilstm(x, lstm):
    """`nn.LSTM` over a (T, B, D) padded batch, packed by length: output (T, B, 2H)."""
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, torch.tensor(LENS), enforce_sorted=False
    )
    out, _ = lstm(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    return out


def new_lstm():
    lstm = torch.nn.LSTM(D, H, bidirectional=True).double()
    with torch.no_grad():
        for p in lstm.parameters():
            p.uniform_(-0.8, 0.8)
    return lstm


def cell_params(lstm, sfx):
    """(w_ih, w_hh, b_ih + b_hh) of one direction (`sfx` "" or "_reverse")."""
    g = lambda n: getattr(lstm, f"{n}_l0{sfx}")  # noqa: E731
    return g("weight_ih"), g("weight_hh"), g("bias_ih") + g("bias_hh")


def write(name, content):
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / name
    path.write_text(json.dumps(content, indent=None) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def lstm_fixture():
    torch.manual_seed(1)
    lstm = new_lstm()
    x = (torch.rand(T, B, D, dtype=torch.float64) * 2 - 1) * mask()
    x.requires_grad_(True)
    out = torch_bilstm(x, lstm)
    r = torch.rand(T, B, 2 * H, dtype=torch.float64) * 2 - 1
    (out * r).sum().backward()
    tensors = {"x": x.reshape(T * B, D), "grad.x": x.grad.reshape(T * B, D)}
    for d, sfx in (("fwd", ""), ("bwd", "_reverse")):
        w_ih, w_hh, b = cell_params(lstm, sfx)
        # b_ih and b_hh get the same gradient (up to rounding), that of their sum.
        g_ih, g_hh = (getattr(lstm, f"bias_{n}_l0{sfx}").grad for n in ("ih", "hh"))
        assert (g_ih - g_hh).abs().max() < 1e-14
        tensors.update({
            f"{d}.w_ih": w_ih, f"{d}.w_hh": w_hh, f"{d}.b": b,
            f"grad.{d}.w_ih": w_ih.grad, f"grad.{d}.w_hh": w_hh.grad,
            f"grad.{d}.b": getattr(lstm, f"bias_ih_l0{sfx}").grad,
        })
    tensors["out"] = out.reshape(T * B, 2 * H)
    tensors["d_out"] = r.reshape(T * B, 2 * H)
    write("lstm_torch.json", {
        "meta": meta("torch.nn.LSTM, one bidirectional layer, packed by length; loss sum(out * d_out)"),
        "tensors": {k: tensor(v) for k, v in tensors.items()},
    })


def sc_lstm_direction(x, xs, cell, gates, reverse):
    """One direction of an SC-LSTM layer, sentence by sentence.

    Per step within a sentence (the reverse direction from its last token back):
      i, f, g, o = split(x_t W_ih^T + h_{t-1} W_hh^T + b)    gate order i, f, g, o
      c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g),  h_t = sigmoid(o) tanh(c_t)
      o^k_t = sigmoid(x^k_t U_k^T + q^k_{t-1} W_k^T + b_k),  q^k_t = o^k_t tanh(c_t)
    with zero initial h, c, q^k; padding steps give zeros. Returns (T, B, H) h and one
    (T, B, H) q^k per gate.
    """
    w_ih, w_hh, b = cell
    zero = torch.zeros(H, dtype=torch.float64)
    hs = [[zero] * B for _ in range(T)]
    qs = [[[zero] * B for _ in range(T)] for _ in gates]
    for s, n in enumerate(LENS):
        h, c = zero, zero
        q = [zero for _ in gates]
        steps = range(n - 1, -1, -1) if reverse else range(n)
        for t in steps:
            a = x[t, s] @ w_ih.T + h @ w_hh.T + b
            i, f, g, o = a.split(H)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            hs[t][s] = h
            for k, (xk, (u, w, bk)) in enumerate(zip(xs, gates)):
                ok = torch.sigmoid(xk[t, s] @ u.T + q[k] @ w.T + bk)
                q[k] = ok * torch.tanh(c)
                qs[k][t][s] = q[k]
    stack = lambda rows: torch.stack([torch.stack(r) for r in rows])  # noqa: E731
    return stack(hs), [stack(r) for r in qs]


def sc_lstm_fixture():
    torch.manual_seed(2)
    lstm = new_lstm()
    m = mask()
    x = ((torch.rand(T, B, D, dtype=torch.float64) * 2 - 1) * m).requires_grad_(True)
    x1 = ((torch.rand(T, B, D1, dtype=torch.float64) * 2 - 1) * m).requires_grad_(True)
    leaf = lambda *shape: (torch.rand(*shape, dtype=torch.float64) * 1.6 - 0.8).requires_grad_(True)  # noqa: E731
    cells = {}
    for d, sfx in (("fwd", ""), ("bwd", "_reverse")):
        w_ih, w_hh, b = cell_params(lstm, sfx)
        cells[d] = (w_ih.detach().clone().requires_grad_(True),
                    w_hh.detach().clone().requires_grad_(True),
                    b.detach().clone().requires_grad_(True))
    # gates[k][d] = (U_k, W_k, b_k); task 0 reads x (D_k = D), task 1 reads x^1.
    gates = [{d: (leaf(H, dk), leaf(H, H), leaf(H)) for d in ("fwd", "bwd")} for dk in (D, D1)]
    h_f, q_f = sc_lstm_direction(x, [x, x1], cells["fwd"], [g["fwd"] for g in gates], False)
    h_b, q_b = sc_lstm_direction(x, [x, x1], cells["bwd"], [g["bwd"] for g in gates], True)
    out = torch.cat([h_f, h_b, q_f[0], q_b[0], q_f[1], q_b[1]], dim=2)
    with torch.no_grad():
        ref = torch_bilstm(x, lstm)
    worst = (ref - out[:, :, : 2 * H]).abs().max().item()
    assert worst < 1e-14, f"explicit loop's h differs from nn.LSTM's by {worst}"
    print(f"explicit SC-LSTM h vs nn.LSTM: max |diff| {worst:.1e}")
    r = torch.rand(T, B, 6 * H, dtype=torch.float64) * 2 - 1
    (out * r).sum().backward()
    inputs = {"x": x, "x^1": x1}
    for d in ("fwd", "bwd"):
        inputs.update(zip((f"{d}.w_ih", f"{d}.w_hh", f"{d}.b"), cells[d]))
    for k, g in enumerate(gates):
        for d in ("fwd", "bwd"):
            inputs.update(zip((f"task{k}.{d}.u", f"task{k}.{d}.w", f"task{k}.{d}.b"), g[d]))
    tensors = {}
    for name, v in inputs.items():
        flat = (lambda t: t.reshape(T * B, -1)) if name.startswith("x") else (lambda t: t)
        tensors[name] = flat(v)
        tensors[f"grad.{name}"] = flat(v.grad)
    tensors["out"] = out.reshape(T * B, 6 * H)
    tensors["d_out"] = r.reshape(T * B, 6 * H)
    write("sc_lstm_torch.json", {
        "meta": meta("explicit SC-LSTM loop (autograd), bidirectional, task 0 reads x, "
                     "task 1 reads x^1; loss sum(out * d_out)"),
        "tensors": {k: tensor(v) for k, v in tensors.items()},
    })


if __name__ == "__main__":
    lstm_fixture()
    sc_lstm_fixture()
