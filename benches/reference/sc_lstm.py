"""PyTorch reference for the paper's SC-LSTM (Eq. 1-3): a 3-layer bidirectional SC-LSTM
written as a researcher would, with a Python loop over time steps.

Each layer and direction has the shared LSTM cell plus, per task k, an output gate
    o^k_t = sigma(W_k q^k_{t-1} + U_k x_t + b_k),   q^k_t = o^k_t * tanh(c_t).
The input projections of all steps (x W_ih^T + b and x U_k^T + b_k) are hoisted out of
the loop as one matmul each. Lower layers pass h_t up and compute no task gate; the
top layer computes the task gates (only the batch's task while training, all three
when tagging) and task k's classifier reads s^k_t = q^k_t ⊕ h_t, both directions.
The reverse direction runs on per-sentence reversed input.

Prints one JSON line with training tokens/s (forward, backward, clip, Adam step) and
inference tokens/s (all three tasks tagged).

    python benches/reference/sc_lstm.py
"""

import sys

import torch
from torch import nn

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
import common  # noqa: E402


class ScLstmDirection(nn.Module):
    """One direction of one layer: the shared cell and (top layer only) the task gates."""

    def __init__(self, d_in, hidden, tasks):
        super().__init__()
        self.hidden = hidden
        self.w_ih = nn.Linear(d_in, 4 * hidden)
        self.w_hh = nn.Linear(hidden, 4 * hidden, bias=False)
        self.u = nn.ModuleDict({k: nn.Linear(d_in, hidden) for k in tasks})
        self.w = nn.ModuleDict({k: nn.Linear(hidden, hidden, bias=False) for k in tasks})

    def forward(self, x, tasks):
        """x: (T, B, D). Returns h (T, B, H) and {task: q^k (T, B, H)}."""
        steps, batch, _ = x.shape
        gx = self.w_ih(x)  # all steps at once
        ox = {k: self.u[k](x) for k in tasks}
        h = x.new_zeros(batch, self.hidden)
        c = x.new_zeros(batch, self.hidden)
        q = {k: x.new_zeros(batch, self.hidden) for k in tasks}
        hs, qs = [], {k: [] for k in tasks}
        for t in range(steps):
            gates = gx[t] + self.w_hh(h)
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            tc = torch.tanh(c)
            h = torch.sigmoid(o) * tc
            hs.append(h)
            for k in tasks:
                q[k] = torch.sigmoid(ox[k][t] + self.w[k](q[k])) * tc
                qs[k].append(q[k])
        return torch.stack(hs), {k: torch.stack(v) for k, v in qs.items()}


def reverse_steps(x, rev):
    """Reverses each sentence within its length; x: (T, B, D), rev: (T, B) indices."""
    return x.gather(0, rev.unsqueeze(2).expand_as(x))


class ScLstm(nn.Module):
    """Embedding ⊕ capitalization → dropout → 3 Bi-SC-LSTM layers → per-task heads on s^k."""

    def __init__(self, corpus, crf):
        super().__init__()
        self.embed = nn.Embedding(corpus.vocab, common.EMBED_DIM, padding_idx=0)
        self.drop = nn.Dropout(common.DROPOUT)
        hd = common.HIDDEN
        self.layers = nn.ModuleList()
        for layer in range(common.LAYERS):
            d_in = common.INPUT_DIM if layer == 0 else 2 * hd
            tasks = common.TASKS if layer == common.LAYERS - 1 else ()
            self.layers.append(
                nn.ModuleList([ScLstmDirection(d_in, hd, tasks) for _ in range(2)])
            )
        self.heads = common.Heads(4 * hd, corpus.tags, crf)

    def encode(self, b, tasks):
        """Returns {task: s^k (T, B, 4H)} for the requested tasks."""
        x = self.drop(torch.cat([self.embed(b.words), b.caps], dim=2))
        for li, (fwd, bwd) in enumerate(self.layers):
            top = li == len(self.layers) - 1
            want = tasks if top else ()
            h_f, q_f = fwd(x, want)
            h_b, q_b = bwd(reverse_steps(x, b.rev), want)
            h_b = reverse_steps(h_b, b.rev)
            h = torch.cat([h_f, h_b], dim=2)
            if top:
                return {
                    k: self.drop(torch.cat([q_f[k], reverse_steps(q_b[k], b.rev), h], dim=2))
                    for k in tasks
                }
            x = self.drop(h)
        raise AssertionError("at least one layer")

    def loss(self, b):
        s = self.encode(b, (b.task,))
        return self.heads.loss(b.task, s[b.task], b)

    def tag(self, b):
        s = self.encode(b, common.TASKS)
        return [self.heads.tag(k, s[k], b) for k in common.TASKS]


def main():
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--crf", action="store_true", help="CRF heads for NER and chunking")
    args = p.parse_args()
    corpus = common.setup(args)
    model = ScLstm(corpus, args.crf)
    record = {"model": "sc-lstm", "variant": "python-loop", "crf": args.crf}
    common.run(model, args, corpus, record)


if __name__ == "__main__":
    main()
