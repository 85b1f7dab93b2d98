"""Welch's t-test p-values from SciPy, the reference for `sclstm report`'s t-test.

Writes crates/sclstm-train/tests/fixtures/welch.json: pairs of samples (seed scores as a
report sees them) and scipy.stats.ttest_ind(a, b, equal_var=False).pvalue, two-sided.
Run: python3 benches/reference/welch.py   (needs scipy; CI does not run it)
"""
import json
import pathlib

import numpy as np
from scipy import stats

rng = np.random.default_rng(20261204)
cases = [
    ([89.96, 90.12, 89.71], [89.35, 89.52, 89.10]),
    ([96.04, 96.10], [95.12, 95.31]),
    ([95.51, 95.50, 95.49, 95.55], [95.46, 95.40, 95.48]),
    ([1.0, 2.0], [1.0, 2.0, 3.0, 4.0, 5.0]),
    ([10.0, 10.1, 9.9], [30.0, 29.0, 31.0]),
]
for n1, n2, scale in [(3, 3, 0.2), (5, 2, 1.0), (10, 10, 0.05), (2, 2, 3.0), (30, 4, 0.5)]:
    a = (90 + scale * rng.standard_normal(n1)).round(4).tolist()
    b = (90.1 + scale * rng.standard_normal(n2)).round(4).tolist()
    cases.append((a, b))
out = [
    {"a": a, "b": b, "p": float(stats.ttest_ind(a, b, equal_var=False).pvalue)}
    for a, b in cases
]
path = pathlib.Path(__file__).resolve().parents[2] / "crates/sclstm-train/tests/fixtures/welch.json"
path.write_text(json.dumps({"scipy": __import__("scipy").__version__, "cases": out}, indent=1) + "\n")
print(f"wrote {len(out)} cases to {path}")
