"""kNN accuracy: zoosel vs transformer-ranker's algorithm, and zoosel 0.1."""

from __future__ import annotations

import torch
from _common import best_of, make_data, rel_diff

from zoosel.scorers import knn as knn_mod
from zoosel.scorers.inputs import check_labels
from zoosel.scorers.knn import knn_accuracy, unit_rows

SCORE = "knn"
TITLE = "kNN accuracy (k = 5): zoosel vs transformer-ranker"
K = 5
NOTES = (
    "Inputs: make_data's seeded float32 features (their classes separate perfectly at "
    "D = 2048: every value is 1, so the table times the algorithms, not their votes). "
    "transformer-ranker (flairNLP, "
    "`estimators/nearestneighbors.py`): rows in batches of 1024 against all N rows with "
    "`torch.cdist` (Euclidean, float32, the full N x N), the batch's own index set to inf, "
    "`topk(k, largest=False)`, `torch.mode` of the neighbours' labels, micro-F1 (= "
    "accuracy); run here with k = 5 like zoosel (its default is 3) on the rows scaled to "
    "unit length outside the timing, so that its Euclidean ranking is zoosel's cosine "
    "ranking. Where their values differ it is the vote: `torch.mode` gives a tied vote "
    "to the smallest label id, and neighbour ties are cut by index, where zoosel shares "
    "the credit (its value depends on the label ids and the sample order, zoosel's does "
    "not). zoosel 0.1: zoosel's former route, the same upper-triangle panels and running "
    "top-k in float64. zoosel now screens in float32 and recomputes in float64 only the "
    "rows whose k-th and (k+1)-th similarities are within twice the float32 error bound "
    "(the result is the float64 one). one Gram: ONE float64 F^T F of the same features, "
    "best of 3 (the yardstick of the other scores; kNN's own similarity matrix is "
    "N x N)."
)


def cases(quick: bool) -> list[dict]:
    """N = 2500, 10000 and 20000 at D = 2048, C = 100."""
    if quick:
        return [{"n": 300, "d": 32, "c": 5, "label": "quick"}]
    return [
        {"n": 2500, "d": 2048, "c": 100, "label": "N = 2500"},
        {"n": 10000, "d": 2048, "c": 100, "label": "N = 10000"},
        {"n": 20000, "d": 2048, "c": 100, "label": "N = 20000"},
    ]


def transformer_ranker(f: torch.Tensor, y: torch.Tensor, k: int = K,
                       batch: int = 1024) -> float:
    """transformer-ranker's kNN estimator: cdist batches, topk, mode vote, accuracy."""
    n = f.shape[0]
    neighbours = torch.zeros((n, k), dtype=torch.long)
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        dist = torch.cdist(f[start:stop], f, p=2)
        own = torch.arange(start, stop)
        dist[own - start, own] = float("inf")
        neighbours[start:stop] = dist.topk(k, largest=False).indices
    predicted = torch.mode(y[neighbours], dim=1).values
    return float((predicted == y).to(torch.float64).mean())


def zoosel_01(f: torch.Tensor, y: torch.Tensor, k: int = K) -> float:
    """zoosel 0.1's route, as it was: float64 unit rows (separate checking and scaling
    passes), float64 upper-triangle panels of 64 MiB, running top-(k+1), tied rows
    recomputed against all samples."""
    x = f.detach().to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("non-finite features")
    peak = x.abs().amax(dim=1, keepdim=True)
    x = x / torch.where(peak > 0, peak, 1.0)
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    x = x / torch.where(norm > 0, norm, 1.0)
    n = x.shape[0]
    y = check_labels(y, n, None)
    k = min(k, n - 1)
    c = int(y.max()) + 1
    block = knn_mod.panel_rows(n)
    keep = k + 1
    vals = torch.full((n, keep), -torch.inf, dtype=x.dtype)
    idx = torch.full((n, keep), -1, dtype=torch.int64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        panel = x[start:stop] @ x[start:].T
        diag = torch.arange(stop - start)
        panel[diag, diag] = -torch.inf
        pv, pi = torch.topk(panel, min(keep, panel.shape[1]), dim=1)
        rows = slice(start, stop)
        vals[rows], idx[rows] = knn_mod._merge(vals[rows], idx[rows], pv, pi + start)
        if stop < n:
            cv, ci = torch.topk(panel[:, stop - start:], min(keep, stop - start), dim=0)
            vals[stop:], idx[stop:] = knn_mod._merge(vals[stop:], idx[stop:], cv.T, ci.T + start)
    credit = torch.empty(n, dtype=x.dtype)
    boundary = vals[:, k] >= vals[:, k - 1] - knn_mod.TIE_TOL
    plain = (~boundary).nonzero().squeeze(1)
    if plain.numel():
        votes = torch.zeros(plain.numel(), c, dtype=x.dtype)
        votes.scatter_add_(1, y[idx[plain, :k]], torch.ones(plain.numel(), k, dtype=x.dtype))
        credit[plain] = knn_mod._credit_from_votes(votes, y[plain])
    tied = boundary.nonzero().squeeze(1)
    if tied.numel():
        credit[tied] = knn_mod._tied_rows_credit(x, tied, y, k, c, block)
    return float(credit.mean())


def run_case(case: dict, repeats: int) -> list[dict]:
    """zoosel, one Gram, transformer-ranker and zoosel 0.1 on the same seeded features."""
    f, y = make_data(case["n"], case["d"], case["c"])
    reps = 1 if case["n"] > 5000 else repeats
    t_z, value = best_of(lambda: knn_accuracy(f, y, k=K), reps)
    rows = [{"impl": "zoosel", "seconds": t_z, "value": value, "note": ""}]
    f64 = f.to(torch.float64)
    t_g, _ = best_of(lambda: f64.T @ f64 if case["n"] >= case["d"] else f64 @ f64.T, 3)
    rows.append({"impl": "one Gram", "seconds": t_g, "value": float("nan"), "note": ""})
    unit = unit_rows(f).to(torch.float32)
    t, v = best_of(lambda: transformer_ranker(unit, y), reps)
    rows.append({"impl": "transformer-ranker", "seconds": t, "value": v,
                 "note": "mode vote, index tie-break"})
    t, v = best_of(lambda: zoosel_01(f, y), reps)
    rows.append({"impl": "zoosel 0.1", "seconds": t, "value": v, "note": "former route"})
    for row in rows[1:]:
        row["rel_diff"] = rel_diff(row["value"], value)
    return rows
