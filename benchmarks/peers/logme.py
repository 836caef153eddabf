"""LogME: zoosel vs thuml's and transformer-ranker's algorithms, and zoosel's former route."""

from __future__ import annotations

import math

import numpy as np
import torch
from _common import best_of, rel_diff

from peers import case_data
from zoosel.scorers.logme import logme_fit

SCORE = "logme"
TITLE = "LogME: zoosel vs thuml/LogME and transformer-ranker"
NOTES = (
    "thuml: the fixed-point LogME of thuml/LogME (`_fit_fixed_point`, commit 3a08950), "
    "in numpy: for N > D an SVD of the D x D matrix F^T F and U = F V / s, for N <= D a "
    "thin SVD of F; per class at most 11 MacKay steps from alpha = beta = 1, stopped at a "
    "1e-3 relative change of alpha / beta, 1e-5 added to both denominators, "
    "|y_perp|^2 = |y|^2 - |U^T y|^2. transformer-ranker (flairNLP, estimators/logme.py): "
    "the same steps in torch after a thin SVD of F, alpha and beta carried from one class "
    "to the next. Both evaluate the evidence with D/2 log alpha and the log det over the "
    "k = rank(F) nonzero singular values only, i.e. they drop -(D - k)/2 log alpha: when "
    "N < D (k = N) their values are wrong, often positive, and the relative difference "
    "in that row is the size of their error (zoosel's value equals the dense "
    "log N(y; 0, F F^T / alpha + I / beta), tested). When N > D they stop after a 1e-3 "
    "change, so they differ from the exact maximum in the 6th or 7th digit here. "
    "zoosel 0.1: zoosel's former route (thin SVD of F, MacKay's fixed point to 1e-8, "
    "at most 1000 steps), kept here to show the change in the same run. zoosel now forms "
    "the smaller Gram matrix and eigendecomposes it when cond(F) < 1e4 (else the thin "
    "SVD) and maximises the evidence's 1-D profile in log(alpha / beta) by a grid and "
    "safeguarded Newton steps. The noisy case redraws 30% of the labels (seeded): "
    "there MacKay's fixed point stops at its 1000-step cap (converged=False)."
)


def cases(quick: bool) -> list[dict]:
    """5-shot (N < D; clean and noisy labels), N = 2500 and N = 20000; D = 2048, C = 100."""
    if quick:
        return [{"n": 60, "d": 100, "c": 5, "label": "quick N < D"},
                {"n": 400, "d": 64, "c": 5, "label": "quick N > D"}]
    return [
        {"n": 500, "d": 2048, "c": 100, "label": "5-shot, N < D"},
        {"n": 500, "d": 2048, "c": 100, "label_noise": 0.3,
         "label": "5-shot, N < D, noise 0.3"},
        {"n": 2500, "d": 2048, "c": 100, "label": "N = 2500"},
        {"n": 20000, "d": 2048, "c": 100, "label": "N = 20000"},
    ]


def _fixed_point(sigma: np.ndarray, x2: np.ndarray, res_x2: float, n: int, d: int,
                 alpha: float, beta: float) -> tuple[float, float, float]:
    """The peers' 11-step MacKay loop and evidence (D/2 log alpha, no (D - k) term)."""
    for _ in range(11):
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())
        m2 = float((sigma * x2 / (t + sigma) ** 2).sum())
        res2 = float((x2 / (1 + sigma / t) ** 2).sum()) + res_x2
        alpha = gamma / (m2 + 1e-5)
        beta = (n - gamma) / (res2 + 1e-5)
        if abs(alpha / beta - t) / t <= 1e-3:
            break
    evidence = (d / 2 * math.log(alpha) + n / 2 * math.log(beta)
                - 0.5 * float(np.log(alpha + beta * sigma).sum()) - beta / 2 * res2
                - alpha / 2 * m2 - n / 2 * math.log(2 * math.pi))
    return evidence / n, alpha, beta


def thuml(f: np.ndarray, y: np.ndarray) -> float:
    """thuml/LogME's fixed-point algorithm (numpy, float64)."""
    f = f.astype(np.float64)
    n, d = f.shape
    if n > d:  # SVD of F^T F, then U = F V / s over the singular values above 1e-10
        _, s2, vh = np.linalg.svd(f.T @ f)
        s = np.sqrt(s2)
        k = int((s > 1e-10).sum())
        s, vh = s[:k], vh[:k]
        u = (f @ vh.T) / s
    else:
        u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s * s
    out = []
    for cls in range(int(y.max()) + 1):
        yc = (y == cls).astype(np.float64)
        x = u.T @ yc
        x2 = x * x
        out.append(_fixed_point(sigma, x2, float(yc @ yc - x2.sum()), n, d, 1.0, 1.0)[0])
    return float(np.mean(out))


def transformer_ranker(f: torch.Tensor, y: torch.Tensor) -> float:
    """transformer-ranker's LogME: thin SVD of F in torch, alpha/beta carried over classes."""
    f = f.to(torch.float64)
    n, d = f.shape
    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    sigma = (s * s).numpy()
    alpha, beta = 1.0, 1.0
    out = []
    for cls in torch.unique(y).tolist():
        yc = (y == cls).to(torch.float64)
        x2 = ((u.T @ yc) ** 2).numpy()
        ev, alpha, beta = _fixed_point(sigma, x2, float(yc @ yc) - float(x2.sum()), n, d,
                                       alpha, beta)
        out.append(ev)
    return float(np.mean(out))


def zoosel_01(f: torch.Tensor, y: torch.Tensor) -> tuple[float, int, bool]:
    """zoosel 0.1's LogME: thin SVD of F, MacKay's fixed point to 1e-8 (<= 1000 steps)."""
    f = f.to(torch.float64)
    n, d = f.shape
    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    tol = float(s.max()) * max(n, d) * torch.finfo(torch.float64).eps
    k = int((s > tol).sum())
    u, s = u[:, :k], s[:k]
    classes = torch.unique(y)
    onehot = (y[:, None] == classes[None, :]).to(torch.float64)
    z = u.T @ onehot
    perp2 = ((onehot - u @ z) ** 2).sum(0)
    s2, z2 = s * s, z * z
    sz = s2[:, None] * z2
    c = classes.numel()
    alpha = torch.ones(c, dtype=torch.float64)
    beta = torch.ones(c, dtype=torch.float64)
    active = torch.ones(c, dtype=torch.bool)

    def terms(a, b, idx):
        denom = a + b * s2[:, None]
        gamma = (b * s2[:, None] / denom).sum(0)
        m2 = ((b / denom) ** 2 * sz[:, idx]).sum(0)
        r2 = ((a / denom) ** 2 * z2[:, idx]).sum(0) + perp2[idx]
        return gamma, m2, r2, torch.log(denom).sum(0)

    it = 0
    while it < 1000 and bool(active.any()):
        it += 1
        idx = active.nonzero().squeeze(1)
        a, b = alpha[idx], beta[idx]
        gamma, m2, r2, _ = terms(a, b, idx)
        new_a = gamma / m2.clamp_min(1e-300)
        new_b = (n - gamma).clamp_min(1e-300) / r2.clamp_min(1e-300)
        change = torch.maximum((new_a - a).abs() / a, (new_b - b).abs() / b)
        alpha[idx], beta[idx] = new_a, new_b
        done = ((change < 1e-8) | (new_b * s2.max() < 1e-12 * new_a)
                | (new_a < 1e-12 * new_b * s2.min()))
        active[idx[done]] = False
    _, m2, r2, logdet = terms(alpha, beta, torch.arange(c))
    ev = (n / 2 * torch.log(beta) + k / 2 * torch.log(alpha) - n / 2 * math.log(2 * math.pi)
          - beta / 2 * r2 - alpha / 2 * m2 - logdet / 2) / n
    return float(ev.mean()), it, not bool(active.any())


def run_case(case: dict, repeats: int) -> list[dict]:
    """zoosel, thuml, transformer-ranker and zoosel 0.1 on the same seeded features."""
    f, y = case_data(case)
    fn, yn = f.numpy(), y.numpy()
    t_z, fit = best_of(lambda: logme_fit(f, y), repeats)
    wide = case["n"] < case["d"]
    peer_note = "drops -(D-k)/2 log alpha: wrong for N < D" if wide else "11 steps, 1e-3"
    rows = [{"impl": "zoosel", "seconds": t_z, "value": fit.score,
             "note": f"{fit.route} route, {fit.iterations} Newton steps, "
                     f"converged={fit.converged}"}]
    t, v = best_of(lambda: thuml(fn, yn), repeats)
    rows.append({"impl": "thuml", "seconds": t, "value": v, "note": peer_note})
    t, v = best_of(lambda: transformer_ranker(f, y), repeats)
    rows.append({"impl": "transformer-ranker", "seconds": t, "value": v, "note": peer_note})
    t, (v, it, conv) = best_of(lambda: zoosel_01(f, y), repeats)
    rows.append({"impl": "zoosel 0.1", "seconds": t, "value": v,
                 "note": f"{it} fixed-point steps, converged={conv}"})
    for row in rows[1:]:
        row["rel_diff"] = rel_diff(row["value"], fit.score)
    return rows
