"""Outside oracle for the BERT encoder of `sclstm-encoder`.

Run:

    /root/venv-ref/bin/python benches/reference/oracle_encoder.py

It writes, under `crates/sclstm-encoder/tests/fixtures/tiny-bert/`:

* `config.json`, `model.safetensors`: a tiny randomly initialised `transformers`
  `BertModel` (vocab 48, hidden 8, 2 heads, 2 layers, intermediate 12, 16 positions).
  Every parameter (LayerNorm scales and biases included) is drawn from N(0, 0.5) so
  that no part of the forward pass is close to an identity; names are unprefixed,
  as `BertModel.state_dict()` gives them;
* `vocab.txt`, `tokenizer.json`: an uncased WordPiece tokenizer over that vocabulary,
  built with the `tokenizers` library the way `BertTokenizerFast` is (BERT normalizer
  and pre-tokenizer, `##` continuation, `[CLS] … [SEP]` template);
* `expected.json`: for a few sentences given as word lists, the sub-word ids and the
  word of each sub-word (`tokenizer(words, is_split_into_words=True)`), the hidden
  states of the embedding output and of every layer (`output_hidden_states=True`,
  the sentences in one padded batch with an attention mask, in float64 from the
  float32 weights), and per word the features the tagger reads: every state at the
  word's first sub-word (`first`) and the mean over its sub-words (`mean`).

Fixed seed; the library versions are recorded in `expected.json`'s `meta`.

Made with Python 3.11, torch 2.15.0 (CPU), transformers 5.25.0, tokenizers 0.23.3.
"""

import json
import pathlib
import sys

import tokenizers
import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

OUT = pathlib.Path(__file__).resolve().parents[2] / "crates/sclstm-encoder/tests/fixtures/tiny-bert"

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PIECES = [
    "the", "eu", "rejects", "german", "call", "to", "boycott", "british", "lamb",
    "peter", "black", "##burn", "un", "##ited", "s", ".", ",", "-", "1996", "08",
    "22", "he", "said", "a", "##s", "##ed", "##ing", "play", "bank", "##er",
    "new", "york", "at", "of", "in", "on", "was", "it", "##t", "##e", "##r", "x", "y",
]
SENTENCES = [
    ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
    ["Peter", "Blackburn"],
    ["U.S.", "bankers", "said", "1996-08-22", ","],
    ["He", "played", "in", "New", "York", "Xylophone"],
]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + PIECES
    (OUT / "vocab.txt").write_text("".join(t + "\n" for t in vocab))

    tok = Tokenizer(WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]",
                              continuing_subword_prefix="##"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))])
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.save(str(OUT / "tokenizer.json"))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")

    torch.manual_seed(16)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=8, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=12, max_position_embeddings=16,
                     type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    state = {k: v.contiguous() for k, v in model.state_dict().items()
             if k != "embeddings.position_ids" and k != "embeddings.token_type_ids"}
    save_file(state, str(OUT / "model.safetensors"))
    cfg.to_json_file(str(OUT / "config.json"))

    batch = fast(SENTENCES, is_split_into_words=True, padding=True, return_tensors="pt")
    model = model.double()
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    output_hidden_states=True)
    sentences = []
    for s, words in enumerate(SENTENCES):
        n = int(batch["attention_mask"][s].sum())
        word_ids = batch.word_ids(s)[:n]
        states = [h[s, :n] for h in out.hidden_states]
        first, mean = [], []
        for w in range(len(words)):
            rows = [t for t, wid in enumerate(word_ids) if wid == w]
            assert rows, f"word {words[w]!r} has no sub-word"
            first.append(torch.cat([h[rows[0]] for h in states]).tolist())
            mean.append(torch.cat([h[rows].mean(0) for h in states]).tolist())
        sentences.append({
            "words": words,
            "ids": batch["input_ids"][s, :n].tolist(),
            "word_ids": [-1 if w is None else w for w in word_ids],
            "states": [h.reshape(-1).tolist() for h in states],
            "first": first,
            "mean": mean,
        })
    fixture = {
        "meta": {
            "what": "tiny BertModel hidden states (embeddings + every layer) and per-word features",
            "script": "benches/reference/oracle_encoder.py",
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "dtype": "float64 (float32 weights)",
            "hidden": cfg.hidden_size,
            "states": cfg.num_hidden_layers + 1,
        },
        "sentences": sentences,
    }
    (OUT / "expected.json").write_text(json.dumps(fixture) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
