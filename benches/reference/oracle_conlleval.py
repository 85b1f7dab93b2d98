"""Outside oracle for `sclstm_data::conlleval`: seqeval's conlleval-compatible scoring.

Run:

    /root/venv-ref/bin/python benches/reference/oracle_conlleval.py

It writes `crates/sclstm-data/tests/fixtures/conlleval/seqeval.json`: a set of small
tag files (gold and predicted tags per sentence) with, per file and for all files
together, seqeval's scores in its default mode (`mode=None`, which follows conlleval's
chunk rules): overall precision, recall, F1 and token accuracy, and per type the gold,
found and correct chunk counts (from `seqeval.metrics.sequence_labeling.get_entities`)
with precision, recall and F1 (`classification_report(output_dict=True)`). Scores are
fractions in [0, 1]; a type with no found (or no gold) chunk scores 0, as in conlleval.

Cases are IOB1 and IOB2 tags only: seqeval reads `S-` and `E-` (BIOES) differently from
the conlleval script (which the project's scorer only sees after
`bioes_to_conlleval`), and it treats tags without a `-` and conlleval's `[`, `]`
and `.` markers differently, so none of those appear.

Made with Python 3.11, seqeval 1.2.2.
"""

import importlib.metadata
import json
import pathlib
import sys
import warnings

from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

OUT = pathlib.Path(__file__).resolve().parents[2] / "crates/sclstm-data/tests/fixtures/conlleval/seqeval.json"

# (name, [(gold tags, predicted tags), ...]); each pair is one sentence.
CASES = [
    ("iob2_exact", [
        ("B-PER I-PER O B-LOC", "B-PER I-PER O B-LOC"),
    ]),
    ("iob1_against_iob2", [
        # I- at a sentence start and after O starts a chunk; B- only between equal types.
        ("B-NP I-NP O B-NP", "I-NP I-NP O I-NP"),
        ("I-ORG I-ORG B-ORG O I-MISC", "B-ORG I-ORG B-ORG O B-MISC"),
    ]),
    ("type_changes", [
        ("B-NP I-NP I-NP", "B-NP I-NP I-VP"),
        ("B-NP I-NP B-VP", "B-NP I-VP I-VP"),
        ("I-PER I-LOC I-LOC", "I-PER I-PER I-LOC"),
    ]),
    ("b_splits_a_chunk", [
        ("B-NP I-NP I-NP", "B-NP B-NP I-NP"),
        ("B-NP B-NP", "B-NP I-NP"),
    ]),
    ("single_token_chunks", [
        ("B-NP", "B-NP"),
        ("I-VP", "B-VP"),
        ("O B-PP O I-ADVP O", "O B-PP B-NP I-ADVP O"),
    ]),
    ("empty_and_o_only_sentences", [
        ("", ""),
        ("O O O", "O O O"),
        ("", ""),
        ("B-LOC", "O"),
    ]),
    ("chunks_end_at_sentence_boundaries", [
        # The same chunk tags on both sides of a boundary are two chunks.
        ("B-NP I-NP", "B-NP I-NP"),
        ("I-NP I-NP", "I-NP I-NP"),
        ("O I-NP", "O I-VP"),
        ("I-VP O", "I-VP O"),
    ]),
    ("spurious_and_missed", [
        ("O O O O", "B-MISC I-MISC O B-PER"),
        ("B-ORG I-ORG I-ORG O", "O O O O"),
        ("B-LOC O B-ORG", "B-LOC O B-LOC"),
    ]),
    ("i_after_b_of_another_type", [
        ("B-PER I-PER", "B-LOC I-PER"),
        ("B-SBAR I-NP B-NP", "B-SBAR I-SBAR I-NP"),
    ]),
]


def scores(sentences):
    gold = [g.split() for g, _ in sentences]
    pred = [p.split() for _, p in sentences]
    ents_g, ents_p = set(get_entities(gold)), set(get_entities(pred))
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    types = sorted({t for t, _, _ in ents_g | ents_p})
    per_type = {}
    for t in types:
        g = {e for e in ents_g if e[0] == t}
        p = {e for e in ents_p if e[0] == t}
        r = report[t]
        assert r["support"] == len(g)
        per_type[t] = {
            "gold": len(g), "found": len(p), "correct": len(g & p),
            "precision": r["precision"], "recall": r["recall"], "f1": r["f1-score"],
        }
    flat_g = sum(gold, [])
    overall = {
        "gold": len(ents_g), "found": len(ents_p), "correct": len(ents_g & ents_p),
        "precision": precision_score(gold, pred, zero_division=0),
        "recall": recall_score(gold, pred, zero_division=0),
        "f1": f1_score(gold, pred, zero_division=0),
        "accuracy": accuracy_score(gold, pred) if flat_g else 0.0,
        "tokens": len(flat_g),
    }
    return {"overall": overall, "per_type": per_type}


def main():
    warnings.simplefilter("ignore")
    cases = [{"name": n, "sentences": s, **scores(s)} for n, s in CASES]
    everything = [pair for _, s in CASES for pair in s]
    cases.append({"name": "all", "sentences": everything, **scores(everything)})
    fixture = {
        "meta": {
            "what": "seqeval default-mode (conlleval-compatible) scores of IOB1/IOB2 tag files",
            "script": "benches/reference/oracle_conlleval.py",
            "python": sys.version.split()[0],
            "seqeval": importlib.metadata.version("seqeval"),
            "sentences": "space-separated gold and predicted tags",
        },
        "cases": cases,
    }
    OUT.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(cases)} cases)")
    for c in cases:
        o = c["overall"]
        print(f"  {c['name']}: gold {o['gold']} found {o['found']} correct {o['correct']} f1 {o['f1']:.4f}")


if __name__ == "__main__":
    main()
