"""PyTorch reference for LSTM-s: one shared 3-layer BiLSTM (nn.LSTM, oneDNN-fused on CPU)
and one classifier per task on its top layer, in the paper configuration.

Two ways of feeding nn.LSTM are measured, as researchers write both:
  packed  pack_padded_sequence / pad_packed_sequence (each direction sees only its
          sentence; the correct one);
  padded  the padded (T, B, 58) tensor as is (faster; the reverse direction reads padding).

Prints one JSON line per variant with training tokens/s (forward, backward, clip, Adam
step) and inference tokens/s (all three tasks tagged).

    python benches/reference/lstm_s.py --variant packed
"""

import sys

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
import common  # noqa: E402


class LstmS(nn.Module):
    """Embedding ⊕ capitalization → dropout → 3-layer BiLSTM → dropout → per-task head."""

    def __init__(self, corpus, packed, crf):
        super().__init__()
        self.packed = packed
        self.embed = nn.Embedding(corpus.vocab, common.EMBED_DIM, padding_idx=0)
        self.drop = nn.Dropout(common.DROPOUT)
        self.lstm = nn.LSTM(
            common.INPUT_DIM,
            common.HIDDEN,
            num_layers=common.LAYERS,
            bidirectional=True,
            dropout=common.DROPOUT,
        )
        self.heads = common.Heads(2 * common.HIDDEN, corpus.tags, crf)

    def encode(self, b):
        x = torch.cat([self.embed(b.words), b.caps], dim=2)
        x = self.drop(x)
        if self.packed:
            p = pack_padded_sequence(x, b.lens, enforce_sorted=False)
            out, _ = self.lstm(p)
            out, _ = pad_packed_sequence(out, total_length=b.steps)
        else:
            out, _ = self.lstm(x)
        return self.drop(out)

    def loss(self, b):
        return self.heads.loss(b.task, self.encode(b), b)

    def tag(self, b):
        h = self.encode(b)
        return [self.heads.tag(k, h, b) for k in common.TASKS]


def main():
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--variant", choices=["packed", "padded", "both"], default="both")
    p.add_argument("--crf", action="store_true", help="CRF heads for NER and chunking")
    args = p.parse_args()
    corpus = common.setup(args)
    variants = ["packed", "padded"] if args.variant == "both" else [args.variant]
    for v in variants:
        torch.manual_seed(args.seed)
        model = LstmS(corpus, v == "packed", args.crf)
        record = {"model": "lstm-s", "variant": v, "crf": args.crf}
        common.run(model, args, corpus, record)


if __name__ == "__main__":
    main()
