"""NCE: zoosel vs the tllib algorithm (thuml/LogME's NCE.py does not run), and zoosel 0.1."""

from __future__ import annotations

import math

import numpy as np
import torch
from _common import best_of, rel_diff

from peers.leep import cases as cases  # the same sizes as LEEP, on the same probabilities
from peers.leep import source_probs
from zoosel.errors import ScoringError
from zoosel.scorers.inputs import check_labels
from zoosel.scorers.nce import nce

SCORE = "nce"
TITLE = "NCE: zoosel vs tllib (columns: D is the number of source classes Cs)"
NOTES = (
    "Inputs: the seeded float32 source-head probabilities of the LEEP table and labels; "
    "every implementation starts from the probabilities, so the hard source labels are "
    "part of the time (numpy `argmax(axis=1)` for the peer, as its callers do). tllib: "
    "`ranking/nce.py`: a Python loop over the N (source, target) pairs adding 1 / N to a "
    "dense C x Cs joint, P(y | z) over the source classes that occur, plus 1e-20 inside "
    "the log; no input check. thuml/LogME's `NCE.py` has the same loop but cannot be "
    "timed: `np.zeros(C_t, C_s, dtype=float)` passes C_s as the dtype (TypeError), and "
    "with that fixed it returns NaN as soon as one (y, z) cell or source class is empty "
    "(0 log 0 and 0 / 0 without a mask). zoosel 0.1: zoosel's former route (a float64 "
    "copy of the probabilities and four checking passes, torch argmax, pair counts by "
    "torch.unique). zoosel now checks the rows in their own dtype (one sum and one "
    "minimum), takes numpy's vectorised argmax and counts the pairs with one bincount. "
    "Values agree to round-off."
)


def tllib(source: np.ndarray, target: np.ndarray) -> float:
    """tllib's NCE algorithm (numpy, one Python step per sample)."""
    c_t = int(target.max()) + 1
    c_s = int(source.max()) + 1
    n = len(source)
    joint = np.zeros((c_t, c_s))
    for s, t in zip(source, target, strict=True):
        joint[int(t), int(s)] += 1.0 / n
    p_z = joint.sum(axis=0, keepdims=True)
    used = p_z.reshape(-1) != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        cond = (joint / p_z).T[used] + 1e-20
    h_given_z = np.sum(-cond * np.log(cond), axis=1, keepdims=True)
    return -float(np.sum(h_given_z * p_z.reshape(-1, 1)[used]))


def zoosel_01(source_probs: torch.Tensor, labels: torch.Tensor) -> float:
    """zoosel 0.1's NCE, as it was: float64 copy and checks, torch argmax, unique pairs."""
    p = source_probs.detach().to(torch.float64)
    if not bool(torch.isfinite(p).all()):
        raise ScoringError("source_probs contain non-finite values (NaN or inf).")
    sums = p.sum(dim=1)
    if bool((p < 0).any()) or bool(((sums - 1).abs() > 1e-3).any()):
        raise ScoringError("source_probs must be probabilities.")
    z = (p / sums[:, None]).argmax(dim=1)
    n = z.shape[0]
    y = check_labels(labels, n, None)
    if int(z.min()) < 0:
        raise ScoringError("source_labels must be non-negative.")
    num_z = int(z.max()) + 1
    pairs, pair_counts = torch.unique(y * num_z + z, return_counts=True)
    z_counts = torch.bincount(z, minlength=num_z)
    n_yz = pair_counts.to(torch.float64)
    n_z = z_counts[pairs % num_z].to(torch.float64)
    result = float((n_yz * torch.log(n_yz / n_z)).sum()) / n
    if not math.isfinite(result):
        raise ScoringError("NCE is not finite for these inputs.")
    return result


def run_case(case: dict, repeats: int) -> list[dict]:
    """zoosel, tllib and zoosel 0.1 on the same seeded probabilities."""
    probs, y = source_probs(case["n"], case["d"], case["c"])
    pn, yn = probs.numpy(), y.numpy()
    t_z, value = best_of(lambda: nce(probs, y), repeats)
    rows = [{"impl": "zoosel", "seconds": t_z, "value": value, "note": ""}]
    t, v = best_of(lambda: tllib(pn.argmax(axis=1), yn), repeats)
    rows.append({"impl": "tllib", "seconds": t, "value": v, "note": "argmax included"})
    t, v = best_of(lambda: zoosel_01(probs, y), repeats)
    rows.append({"impl": "zoosel 0.1", "seconds": t, "value": v, "note": "former route"})
    for row in rows[1:]:
        row["rel_diff"] = rel_diff(row["value"], value)
    return rows
