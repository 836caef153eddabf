"""Do two commits' scorers compute the same values? Evidence for the scorer versions of a
committed build (see benchmarks/results/selection/BUILD.md).

Every scorer registered at each commit (the rankagg plugin with the commit's own copy)
scores the same synthetic pools: four candidates per pool with Gaussian class clusters
of growing separation (half of them ReLU-like), source-head probabilities, gradient
sketches, probe features and source means; 4 pools from 4 classes x 5 images to 10
classes x 25 images, 64 to 512 features. Printed per scorer: the largest relative
difference between the two commits' values and the version each commit gives it.
From the repository root::

    python benchmarks/scorer_values_across_commits.py 936da3b HEAD
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

POOLS = {"c5_n25_d64": (0, 25, 5, 64), "c10_n25_d128": (1, 25, 10, 128),
         "c10_n20_d512": (2, 20, 10, 512), "c4_n5_d96": (3, 5, 4, 96)}


def _pool(seed: int, per_class: int, classes: int, dim: int, source_classes: int = 10,
          sketch: int = 256) -> dict:
    import numpy as np
    import torch

    from zoosel.types import ScoreInputs

    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    out = {}
    for j, sep in enumerate((0.3, 1.0, 2.0, 4.0)):
        means = rng.normal(size=(classes, dim)) * sep * 4 / np.sqrt(dim)
        f = means[labels] + rng.normal(size=(len(labels), dim))
        f = np.maximum(f, 0) if j % 2 else f
        logits = f @ rng.normal(size=(dim, source_classes)) / np.sqrt(dim) * 2
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = f @ rng.normal(size=(dim, sketch)) / np.sqrt(dim) \
            + rng.normal(size=(len(labels), sketch)) * 0.5
        probe = means[labels][:, :32] + rng.normal(size=(len(labels), 32))

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.tensor(a, dtype=torch.float32)

        out[f"m{j}"] = ScoreInputs(
            labels=torch.tensor(labels), num_classes=classes, features=t(f),
            source_probs=t(p), gradient_sketch=t(g), probe_features=t(probe),
            source_means=t(rng.normal(size=(source_classes, dim))),
            source_weights=t(np.full(source_classes, 1.0 / source_classes)))
    return out


def score_all() -> dict:
    """Every registered scorer's values on :data:`POOLS` (run inside one commit's tree)."""
    import warnings

    import torch

    import zoosel

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    scorers = zoosel.list_scorers()
    values: dict = {}
    for name, spec in POOLS.items():
        pool = _pool(*spec)
        for sname, scorer in sorted(scorers.items()):
            try:
                raw = {m: scorer.fn(x) for m, x in pool.items()}
                got = scorer.pool_normalize(raw) if scorer.pool_normalize else raw
                values.setdefault(name, {})[sname] = {m: float(v) for m, v in got.items()}
            except Exception as exc:  # a scorer that fails on a pool: compared as such
                values.setdefault(name, {})[sname] = {"error": type(exc).__name__}
    return {"versions": {n: getattr(s, "version", "(none)") for n, s in scorers.items()},
            "values": values}


def _run(commit: str, tmp: Path) -> dict:
    tree = tmp / commit
    tree.mkdir()
    archive = subprocess.run(["git", "archive", commit, "zoosel", "plugins"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    path = [str(tree), str(tree / "plugins" / "zoosel-rankagg")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    out = subprocess.run([sys.executable, __file__, "--child"], env=env, check=True,
                         capture_output=True, text=True, cwd=tmp).stdout
    return json.loads(out)


def _max_rel(a: dict, b: dict, name: str) -> str:
    worst = 0.0
    for pool in b["values"]:
        x, y = a["values"].get(pool, {}).get(name), b["values"][pool].get(name)
        if x is None or y is None:
            return "missing"
        if "error" in x or "error" in y:
            if x != y:
                return f"error {x.get('error', 'none')} / {y.get('error', 'none')}"
            continue
        for m in y:
            if math.isnan(x[m]) and math.isnan(y[m]):
                continue
            worst = max(worst, abs(x[m] - y[m]) / max(abs(x[m]), abs(y[m]), 1e-12))
    return f"{worst:.1e}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    if "--child" in sys.argv:
        print(json.dumps(score_all()))
        return 0
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a, b = _run(args.old, Path(tmp)), _run(args.new, Path(tmp))
    print(f"| Scorer | version at {args.old} | version at {args.new} | max relative "
          "difference |\n|---|---|---|---|")
    for name in sorted(set(a["versions"]) | set(b["versions"])):
        print(f"| {name} | {a['versions'].get(name, '-')} | {b['versions'].get(name, '-')} | "
              f"{_max_rel(a, b, name)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
