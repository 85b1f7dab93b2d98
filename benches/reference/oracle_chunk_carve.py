"""Independent counts of the CoNLL-2000 dev carve (datasets/README.md, "CoNLL-2000 dev carve").

Run:

    /root/venv-ref/bin/python benches/reference/oracle_chunk_carve.py

It prints, for the carved `chunk train` and `chunk dev` splits of
`datasets/conll2000/train.txt`: sentences, tokens, distinct tags and gold chunks. The
numbers are written as literals in `crates/sclstm-data/tests/shipped.rs`
(`stats_match_the_datasets_readme`). Nothing here uses the project's code: ChaCha8
(8 rounds, 64-bit block counter in words 12-13, stream in words 14-15, key = seed as
little-endian u64, then the stream, then zeros, as `rand_chacha`'s `ChaCha8Rng`), the
rejection-sampled Fisher-Yates shuffle and conlleval's chunk-start rule are written out
below. It first checks the generator against the pinned shuffle of seed 1
(`shuffle_is_portable` in `crates/sclstm-data/src/batch.rs`).

Made with Python 3.11 (standard library only).
"""

import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEED, DEV_SIZE = 2000, 1000
MASK = 0xFFFFFFFF


def chacha8_words(seed, stream):
    """The keystream of ChaCha8 as 32-bit words, block after block."""
    key = struct.unpack("<8I", struct.pack("<QQ", seed, stream) + bytes(16))
    const = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)
    counter = 0
    while True:
        init = list(const) + list(key) + [counter & MASK, counter >> 32, 0, 0]
        x = init[:]

        def qr(a, b, c, d):
            for (p, q, r, s) in ((a, b, d, 16), (c, d, b, 12), (a, b, d, 8), (c, d, b, 7)):
                x[p] = (x[p] + x[q]) & MASK
                x[r] ^= x[p]
                x[r] = ((x[r] << s) | (x[r] >> (32 - s))) & MASK

        for _ in range(4):
            qr(0, 4, 8, 12), qr(1, 5, 9, 13), qr(2, 6, 10, 14), qr(3, 7, 11, 15)
            qr(0, 5, 10, 15), qr(1, 6, 11, 12), qr(2, 7, 8, 13), qr(3, 4, 9, 14)
        yield from ((a + b) & MASK for a, b in zip(x, init))
        counter += 1


def shuffle(items, seed, stream=0):
    """Fisher-Yates; the draw in 0..n takes u64 values (low word first) >= (2^64 - n) % n."""
    words = chacha8_words(seed, stream)
    for i in range(len(items) - 1, 0, -1):
        n = i + 1
        threshold = (2**64 - n) % n
        while True:
            v = next(words) | (next(words) << 32)
            if v >= threshold:
                break
        j = v % n
        items[i], items[j] = items[j], items[i]
    return items


def sentences(path):
    """(first line number, tags) per blank-line separated sentence; tag = column 3."""
    out, cur, first = [], [], None
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            first = first or no
            cur.append(line.split()[2])
        elif cur:
            out.append((first, cur))
            cur, first = [], None
    if cur:
        out.append((first, cur))
    return out


def chunks(tags):
    """Gold chunks by conlleval's start rule (B/I/O tags; a sentence starts after O)."""
    count, prev_p, prev_t = 0, "O", ""
    for tag in tags:
        p, _, t = tag.partition("-")
        if p == "B" or (p == "I" and (prev_p == "O" or prev_t != t)):
            count += 1
        prev_p, prev_t = p, t
    return count


def main():
    pinned = shuffle(list(range(10)), 1)
    assert pinned == [5, 6, 9, 0, 8, 4, 3, 2, 1, 7], pinned
    sents = sentences(ROOT / "datasets/conll2000/train.txt")
    order = shuffle(list(range(len(sents))), SEED)
    dev = set(order[:DEV_SIZE])
    print("first dev sentences start at lines", [sents[i][0] for i in sorted(dev)[:3]])
    for name, keep in (("train", lambda i: i not in dev), ("dev", lambda i: i in dev)):
        part = [tags for i, (_, tags) in enumerate(sents) if keep(i)]
        tokens = sum(len(t) for t in part)
        distinct = len({tag for t in part for tag in t})
        print(f"chunk {name}: sentences {len(part)} tokens {tokens} tags {distinct} "
              f"chunks {sum(chunks(t) for t in part)}")


if __name__ == "__main__":
    main()
