"""Outside oracle for a whole tiny `sclstm-model` Tagger's loss and gradients.

Run:

    /root/venv-ref/bin/python benches/reference/oracle_model.py

It writes `crates/sclstm-model/tests/fixtures/lstm_s_softmax_torch.json`: an LSTM-s
tagger (one bidirectional layer, H 3, word embeddings of width 3 plus the fixed one-hot
capitalization 8-vector, one softmax task "pos" with 4 tags, no dropout) in PyTorch:
`torch.nn.LSTM` packed by length, logits `s · weight + bias`, and the loss of the README's
"Loss scale": the token cross-entropies summed over every sentence, divided by the
batch size B (lengths 4 2 3 in 4 padded steps). The fixture holds every parameter under
the model's names (`embed.word`, `encoder.layer0.{fwd,bwd}.{w_ih,w_hh,bias}` with
`bias = b_ih + b_hh`, `head.pos.{weight,bias}`), the batch (time-major ids, capitalization
classes, gold tags, 0 on padding), the loss and `grad.<name>` for every parameter.
float64, fixed seed; versions in `meta`.

Made with Python 3.11, torch 2.15.0 (CPU).
"""

import json
import pathlib
import sys

import torch

T, B, V, DW, H, L, CAPS = 4, 3, 7, 3, 3, 4, 8
LENS = [4, 2, 3]
OUT = pathlib.Path(__file__).resolve().parents[2] / "crates/sclstm-model/tests/fixtures/lstm_s_softmax_torch.json"


def tensor(t):
    t = t.detach()
    if t.dim() == 1:
        t = t.reshape(1, -1)
    return {"shape": list(t.shape), "data": t.reshape(-1).tolist()}


def main():
    torch.manual_seed(4)
    mask = torch.zeros(T, B, dtype=torch.bool)
    for b, n in enumerate(LENS):
        mask[:n, b] = True
    word_ids = torch.randint(1, V, (T, B)) * mask
    cap_ids = torch.randint(0, CAPS, (T, B)) * mask
    gold = torch.randint(0, L, (T, B)) * mask
    embed = torch.rand(V, DW, dtype=torch.float64) * 2 - 1
    embed[0] = 0.0
    embed.requires_grad_(True)
    lstm = torch.nn.LSTM(DW + CAPS, H, bidirectional=True).double()
    with torch.no_grad():
        for p in lstm.parameters():
            p.uniform_(-0.7, 0.7)
    weight = (torch.rand(2 * H, L, dtype=torch.float64) - 0.5).requires_grad_(True)
    bias = (torch.rand(1, L, dtype=torch.float64) - 0.5).requires_grad_(True)

    caps = torch.nn.functional.one_hot(cap_ids, CAPS).double() * mask.unsqueeze(2)
    x = torch.cat([embed[word_ids], caps], dim=2)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(LENS), enforce_sorted=False)
    out, _ = lstm(packed)
    s, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    logits = s @ weight + bias
    ce = torch.nn.functional.cross_entropy(logits.reshape(T * B, L), gold.reshape(-1), reduction="none")
    loss = (ce * mask.reshape(-1)).sum() / B
    loss.backward()

    params = {"embed.word": (embed, embed.grad)}
    for d, sfx in (("fwd", ""), ("bwd", "_reverse")):
        g = lambda n: getattr(lstm, f"{n}_l0{sfx}")  # noqa: E731
        assert (g("bias_ih").grad - g("bias_hh").grad).abs().max() < 1e-14
        params[f"encoder.layer0.{d}.w_ih"] = (g("weight_ih"), g("weight_ih").grad)
        params[f"encoder.layer0.{d}.w_hh"] = (g("weight_hh"), g("weight_hh").grad)
        params[f"encoder.layer0.{d}.bias"] = (g("bias_ih") + g("bias_hh"), g("bias_ih").grad)
    params["head.pos.weight"] = (weight, weight.grad)
    params["head.pos.bias"] = (bias, bias.grad)
    fixture = {
        "meta": {
            "what": "LSTM-s tagger, softmax head, loss = summed token cross-entropy / B",
            "script": "benches/reference/oracle_model.py",
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "dtype": "float64",
            "vocab": V, "word_dim": DW, "hidden": H,
            "tags": ["A", "B", "C", "D"],
        },
        "steps": T, "lens": LENS,
        "word_ids": word_ids.reshape(-1).tolist(),
        "cap_ids": cap_ids.reshape(-1).tolist(),
        "gold": gold.reshape(-1).tolist(),
        "loss": loss.item(),
        "params": {k: tensor(v) for k, (v, _) in params.items()},
        "grads": {k: tensor(g) for k, (_, g) in params.items()},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes), loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
