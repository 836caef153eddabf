"""LEEP: zoosel vs the thuml/LogME and tllib algorithm, and zoosel's former route."""

from __future__ import annotations

import math

import numpy as np
import torch
from _common import best_of, rel_diff

from zoosel.errors import ScoringError
from zoosel.scorers.inputs import check_labels
from zoosel.scorers.leep import leep

SCORE = "leep"
TITLE = "LEEP: zoosel vs thuml/LogME and tllib (columns: D is the number of source classes Cs)"
NOTES = (
    "Inputs: seeded float32 source-head softmax probabilities (N, Cs) and labels, the same "
    "arrays for everyone (numpy views for the peers). thuml/tllib: the LEEP of thuml/LogME "
    "`LEEP.py` and tllib `ranking/leep.py` (one algorithm): the joint P(y, z) summed class "
    "by class through boolean masks, P(y | z) = joint / column sums, the full (N, Cs) x "
    "(Cs, C) product, then the true label's entry picked row by row in Python; no input "
    "check, NaN when a source class has zero probability everywhere (0 / 0). "
    "zoosel 0.1: zoosel's former route (float64 copy of the probabilities, four checking "
    "passes, a renormalised copy, index_add_, the same full product). zoosel now checks "
    "the rows in the input dtype with float64 row sums, accumulates the joint in float64 "
    "row blocks, and needs only each sample's own label column of the product "
    "(sum_z theta_iz P(y_i | z): N Cs multiply-adds instead of N Cs C). Values agree to "
    "round-off (float64 throughout in all three)."
)


def source_probs(n: int, cs: int, c: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded float32 softmax rows (N, Cs) whose argmax leans on the label; labels (N,)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    favourite = rng.integers(0, cs, size=c)  # each target class leans on one source class
    logits = 2.0 * rng.normal(size=(n, cs))
    logits[np.arange(n), favourite[y]] += 3.0
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return torch.from_numpy(p.astype(np.float32)), torch.from_numpy(y)


def cases(quick: bool) -> list[dict]:
    """N = 500 (overhead-bound), 2500 and 20000 at Cs = 1000, C = 100."""
    if quick:
        return [{"n": 200, "d": 50, "c": 5, "label": "quick"}]
    return [
        {"n": 500, "d": 1000, "c": 100, "label": "N = 500"},
        {"n": 2500, "d": 1000, "c": 100, "label": "N = 2500"},
        {"n": 20000, "d": 1000, "c": 100, "label": "N = 20000"},
    ]


def thuml_tllib(probs: np.ndarray, y: np.ndarray) -> float:
    """The thuml/LogME and tllib LEEP algorithm (numpy)."""
    n, cs = probs.shape
    c = int(y.max()) + 1
    weighted = probs / float(n)
    joint = np.zeros((c, cs))
    for t in range(c):  # one boolean mask per target class
        joint[t] = weighted[y == t].sum(axis=0)
    cond = (joint / joint.sum(axis=0, keepdims=True)).T  # (Cs, C)
    eep = probs @ cond  # the full (N, C) product
    own = np.array([row[t] for row, t in zip(eep, y, strict=True)])
    return float(np.mean(np.log(own)))


def zoosel_01(source_probs: torch.Tensor, labels: torch.Tensor) -> float:
    """zoosel 0.1's LEEP, as it was: float64 copy, separate checks, full product."""
    probs = source_probs
    p = probs.detach().to(torch.float64)
    if not bool(torch.isfinite(p).all()):
        raise ScoringError("source_probs contain non-finite values (NaN or inf).")
    sums = p.sum(dim=1)
    if bool((p < 0).any()) or bool(((sums - 1).abs() > 1e-3).any()):
        raise ScoringError("source_probs must be probabilities.")
    theta = p / sums[:, None]
    n = theta.shape[0]
    y = check_labels(labels, n, None)
    c = int(y.max()) + 1
    joint = torch.zeros(c, theta.shape[1], dtype=torch.float64)
    joint.index_add_(0, y, theta)
    joint /= n
    marginal = joint.sum(dim=0)
    cond = torch.where(marginal > 0, joint / marginal.clamp_min(1e-300), 0.0)
    eep = (theta @ cond.T).gather(1, y[:, None]).squeeze(1)
    result = float(torch.log(eep).mean())
    if not math.isfinite(result):
        raise ScoringError("LEEP is not finite for these inputs.")
    return result


def run_case(case: dict, repeats: int) -> list[dict]:
    """zoosel, thuml/tllib and zoosel 0.1 on the same seeded probabilities."""
    probs, y = source_probs(case["n"], case["d"], case["c"])
    pn, yn = probs.numpy(), y.numpy()
    t_z, value = best_of(lambda: leep(probs, y), repeats)
    rows = [{"impl": "zoosel", "seconds": t_z, "value": value, "note": ""}]
    t, v = best_of(lambda: thuml_tllib(pn, yn), repeats)
    rows.append({"impl": "thuml/tllib", "seconds": t, "value": v, "note": ""})
    t, v = best_of(lambda: zoosel_01(probs, y), repeats)
    rows.append({"impl": "zoosel 0.1", "seconds": t, "value": v, "note": "former route"})
    for row in rows[1:]:
        row["rel_diff"] = rel_diff(row["value"], value)
    return rows
