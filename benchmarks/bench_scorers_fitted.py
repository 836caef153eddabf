"""Time NLEEP, SFDA, PACTran, ETran and NCTI against one float64 Gram and against naive
formulations of the same scores.

Reference ("one Gram"): F^T F in float64 when N > D (F F^T when N < D), F already float64,
best of 3, re-measured after every score in the same run; each ratio uses the fastest Gram
seen so far at that size. Each score is timed from the float32 features, float64
conversion included.

Naive formulations (same results, straightforward code):

* NLEEP: the same principal projection and k-means++ start, EM with a Python loop over
  the mixture components in both steps. It is timed on ``--naive-iters`` EM iterations
  and scaled to the iteration count of the fast fit; its posteriors are compared with the
  fast EM stopped after the same number of iterations.
* SFDA (and ETran's LDA term, NCTI): exact PCA with numpy's full ``eigh`` of the D x D
  covariance, within-class covariance summed class by class, the Fisher directions from
  ``eig(inv(S_w) S_b)`` (normalised to v^T S_w v = 1), posteriors one sample at a time.
* PACTran: torch's L-BFGS (strong Wolfe, history 20, float64) on (W, b) until the
  gradient is 1e-6 of its start, with logits and gradient computed by a Python loop over
  the classes (one matrix-vector product per class). At the large size it is timed on a
  few iterations and scaled to the fast fit's iteration count.

Run: .venv/bin/python benchmarks/bench_scorers_fitted.py [--quick] [--scores pactran,sfda]
Writes benchmarks/results/scorers_fitted.md; a run limited by ``--scores`` replaces only
those scores' rows there and records its own command, machine and load under the header.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp, softmax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import gram, load_average, machine_line, make_data, write_results  # noqa: E402

from zoosel.scorers.etran import etran_components  # noqa: E402
from zoosel.scorers.ncti import ncti_components  # noqa: E402
from zoosel.scorers.nleep import (  # noqa: E402
    fit_diagonal_mixture,
    kmeans_plus_plus,
    nleep_fit,
)
from zoosel.scorers.pactran import pactran_fit  # noqa: E402
from zoosel.scorers.sfda import default_dim, sfda_fit  # noqa: E402
from zoosel.threads import serial  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "scorers_fitted.md"
TARGETS = {"nleep": 30, "sfda": 6, "pactran": 30, "etran": None, "ncti": None}


def timed(fn, repeats: int = 1):
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def gram_time(f: torch.Tensor) -> float:
    g = f.double()
    return timed(lambda: gram(g), 3)[0]


# ------------------------------------------------------------------ naive versions


def naive_pca(f: np.ndarray, k: int) -> np.ndarray:
    xc = f - f.mean(axis=0)
    evals, vecs = np.linalg.eigh(xc.T @ xc)
    return xc @ vecs[:, np.argsort(evals)[::-1][:k]]


def naive_lda(z: np.ndarray, y: np.ndarray, lam: float | None = None):
    """Per-class covariance loop, eig(inv(S_w) S_b), posteriors sample by sample."""
    n, d = z.shape
    c = int(y.max()) + 1
    mu = z.mean(axis=0)
    means = np.zeros((c, d))
    within = np.zeros((d, d))
    between = np.zeros((d, d))
    priors = np.zeros(c)
    for k in range(c):
        rows = z[y == k]
        priors[k] = len(rows) / n
        means[k] = rows.mean(axis=0)
        within += priors[k] * np.cov(rows.T, bias=True).reshape(d, d)
        between += priors[k] * np.outer(means[k] - mu, means[k] - mu)
    if lam is None:
        lam = max(math.exp(-5 * np.linalg.eigvalsh(within)[-1]), 1e-10)
    within = (1 - lam) * within + lam * np.trace(within) / d * np.eye(d)
    evals, vecs = np.linalg.eig(np.linalg.inv(within) @ between)
    evals, vecs = evals.real, vecs.real
    order = np.argsort(evals)[::-1]
    keep = [j for j in order[: c - 1] if evals[j] > 1e-10 * evals[order[0]]]
    v = vecs[:, keep]
    v = v / np.sqrt(np.einsum("ij,ik,kj->j", v, within, v))
    proj_means = (means - mu) @ v
    post = np.zeros((n, c))
    for i in range(n):
        p = (z[i] - mu) @ v
        post[i] = softmax(proj_means @ p - 0.5 * (proj_means**2).sum(axis=1) + np.log(priors))
    return post, lam, means, v


def naive_sfda(f: np.ndarray, y: np.ndarray) -> float:
    c = int(y.max()) + 1
    z = naive_pca(f, default_dim(len(y), c))
    post, lam, means, _ = naive_lda(z, y)
    mixed = z.copy()
    for k in range(c):
        rows = np.where(y == k)[0]
        s = softmax(post[rows], axis=1)[:, k][:, None]
        other = (means.sum(axis=0) - means[k]) / (c - 1)
        mixed[rows] = s * z[rows] + (1 - s) * other
    post2, _, _, _ = naive_lda(mixed, y, lam)
    return float(np.mean([post2[i, y[i]] for i in range(len(y))]))


def naive_etran(f: np.ndarray, y: np.ndarray) -> dict[str, float]:
    energy = float(np.mean([logsumexp(row) for row in f]))
    c = int(y.max()) + 1
    post, _, _, _ = naive_lda(naive_pca(f, default_dim(len(y), c)), y)
    return {"energy": energy, "lda": float(np.mean([post[i, y[i]] for i in range(len(y))]))}


def naive_ncti(f: np.ndarray, y: np.ndarray) -> dict[str, float]:
    n = len(y)
    c = int(y.max()) + 1
    xc = f - f.mean(axis=0)
    evals = np.sort(np.linalg.eigvalsh(xc.T @ xc))[::-1]
    z = naive_pca(f, min(64, n - c))
    lam = max(math.exp(-evals[:32].sum() / (n - 1)), 1e-10)
    post, _, _, v = naive_lda(z, y, lam)
    seli = np.linalg.norm((z - z.mean(axis=0)) @ v, ord="nuc")
    spread = sum(np.linalg.norm(post[y == k], ord="nuc") for k in range(c))
    return {"seli": float(seli), "ncc": float(np.mean([post[i, y[i]] for i in range(n)])),
            "vc": -math.log(spread)}


def naive_em(z: np.ndarray, start_idx: np.ndarray, iters: int, floor: float):
    """Diagonal-mixture EM with a Python loop over components; returns the posteriors."""
    n, d = z.shape
    k = len(start_idx)
    means = z[start_idx].copy()
    variances = np.tile(z.var(axis=0), (k, 1)).clip(min=floor)
    weights = np.full(k, 1.0 / k)
    for it in range(iters + 1):
        logp = np.zeros((n, k))
        for j in range(k):
            logp[:, j] = (math.log(weights[j]) - 0.5 * np.sum(
                np.log(2 * math.pi * variances[j]) + (z - means[j]) ** 2 / variances[j], axis=1))
        resp = np.exp(logp - logsumexp(logp, axis=1, keepdims=True))
        if it == iters:
            return resp
        for j in range(k):
            r = resp[:, j]
            nj = r.sum()
            if nj > 0:
                means[j] = r @ z / nj
                variances[j] = np.maximum(r @ (z - means[j]) ** 2 / nj, floor)
            weights[j] = nj / n
    return resp


def naive_pactran(f: torch.Tensor, y: torch.Tensor, max_iter: int = 500):
    """PACTran with the same torch L-BFGS, but logits and gradient computed by a Python
    loop over the classes (one matrix-vector product each) instead of two products."""
    x = f.double()
    x = x - x.mean(dim=0)
    n, d = x.shape
    k = int(y.max()) + 1
    onehot = torch.nn.functional.one_hot(y, k).double()
    reg = float(n)
    weight = torch.zeros(d, k, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=True)

    def value_and_grad():
        w, b = weight.detach(), bias.detach()
        logits = torch.stack([x @ w[:, c] + b[c] for c in range(k)], dim=1)
        lse = torch.logsumexp(logits, dim=1)
        p = torch.exp(logits - lse[:, None])
        value = (lse - logits.gather(1, y[:, None]).squeeze(1)).mean() + (w * w).sum() / (2 * reg)
        gw = torch.stack([x.T @ (p[:, c] - onehot[:, c]) / n + w[:, c] / reg
                          for c in range(k)], dim=1)
        return value, gw, (p - onehot).mean(dim=0)

    value, gw, gb = value_and_grad()
    scale = max(float(gw.abs().max()), float(gb.abs().max()))
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter,
                            tolerance_grad=1e-6 * scale,
                            tolerance_change=1e-15 * max(1.0, float(value)),
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        value, gw, gb = value_and_grad()
        weight.grad, bias.grad = gw, gb
        return value

    with serial():
        opt.step(closure)
    iterations = int(opt.state_dict()["state"][0]["n_iter"])
    w, b = weight.detach(), bias.detach()
    logits = x @ w + b
    p = torch.softmax(logits, dim=1)
    risk = float((torch.logsumexp(logits, 1) - logits.gather(1, y[:, None]).squeeze(1)).mean())
    trace = float((((x * x).sum(1) + 1) * (p * (1 - p)).sum(1)).sum()) / n
    lam = reg / (100.0 / d)
    bound = risk + float((w * w).sum()) / (2 * reg) + d * k / (2 * lam) * math.log1p(
        reg * trace / (d * k))
    return bound, iterations


# --------------------------------------------------------------------------- main


def bench_size(n: int, d: int, c: int, args, rows: list[str]) -> None:
    f, y = make_data(n, d, c)
    fn, yn = f.double().numpy(), y.numpy()
    grams = [gram_time(f)]
    print(f"N={n} D={d} C={c}: one Gram {grams[0]:.3f}s", flush=True)
    large = n * d > 2500 * 2048

    def row(name, t, naive_t, basis, diff, extra=""):
        grams.append(gram_time(f))  # re-measured after each score: the load varies
        tg = min(grams)  # the fastest Gram seen so far: the conservative reference
        target = TARGETS[name]
        ratio = t / tg
        verdict = "" if target is None else (" (ok)" if ratio <= target else " (MISSED)")
        text = (f"| {name} | {n} | {d} | {c} | {tg:.3f} | {t:.2f} | {ratio:.1f}x | "
                f"{'-' if target is None else f'<= {target}x'}{verdict} | {naive_t:.1f} | "
                f"{basis} | {naive_t / t:.1f}x | {diff} | {extra} |")
        print(text, flush=True)
        rows.append(text)

    if "nleep" in args.selected:
        bench_nleep(f, y, args, row)
    if "sfda" in args.selected:  # SFDA
        t, sf = timed(lambda: sfda_fit(f, y))
        tn, ref = timed(lambda: naive_sfda(fn, yn))
        row("sfda", t, tn, "full run", f"{abs(sf.score - ref):.1e}",
            f"d={sf.dim} ({sf.pca.method} PCA), score {sf.score:.6f}")
    if "pactran" in args.selected:
        bench_pactran(f, y, args, row, large)
    for name, fast, naive in (("etran", etran_components, naive_etran),
                              ("ncti", ncti_components, naive_ncti)):
        if name not in args.selected:
            continue
        t, parts = timed(lambda fast=fast: fast(f, y))
        tn, ref = timed(lambda naive=naive: naive(fn, yn))
        diff = max(abs(parts[k] - ref[k]) / max(abs(ref[k]), 1e-300) for k in parts)
        row(name, t, tn, "full run", f"{diff:.1e} rel.",
            ", ".join(f"{k} {v:.4g}" for k, v in parts.items()))


def bench_nleep(f: torch.Tensor, y: torch.Tensor, args, row) -> None:
    """NLEEP against the naive EM (timed on a few iterations, scaled)."""
    t, fit = timed(lambda: nleep_fit(f, y))
    mix = fit.mixture
    k = mix.weights.numel()
    t_em, _ = timed(lambda: fit_diagonal_mixture(fit.z, k))  # the fast EM alone
    iters = min(args.naive_iters, mix.iterations)
    z = fit.z.numpy()
    start = kmeans_plus_plus(fit.z, k).numpy()
    tn, resp = timed(lambda: naive_em(z, start, iters, mix.floor))
    short = fit_diagonal_mixture(fit.z, k, max_iter=iters, tol=-math.inf)
    diff = float(np.abs(resp - short.posteriors.numpy()).max())
    scale = (mix.iterations + 1) / (iters + 1)  # E-steps: iterations + 1
    naive_total = t - t_em + tn * scale  # the same projection and seeding, naive EM
    row("nleep", t, naive_total,
        f"naive EM on {iters} iterations, scaled x{scale:.1f}; projection and seeding as fast",
        f"{diff:.1e} (posteriors after {iters} it.)",
        f"k={z.shape[1]} dims, K={k}, {mix.iterations} EM it. ({t_em:.1f}s of EM), "
        f"score {fit.score:.4f}")


def bench_pactran(f: torch.Tensor, y: torch.Tensor, args, row, large: bool) -> None:
    """PACTran against the naive fit (timed on a few iterations and scaled when large)."""
    t, pf = timed(lambda: pactran_fit(f, y))
    if large:  # the same iterations, so time a few and scale
        tn, (_, used) = timed(lambda: naive_pactran(f, y, max_iter=args.naive_pactran_iters))
        naive_total = tn * pf.iterations / max(used, 1)
        basis = f"{used} L-BFGS iterations, scaled x{pf.iterations / max(used, 1):.1f}"
        diff = "n/a (not run to the end)"
    else:
        naive_total, (bound, used) = timed(lambda: naive_pactran(f, y))
        basis = f"full run ({used} L-BFGS iterations)"
        diff = f"{abs(bound - pf.bound) / abs(pf.bound):.1e} rel."
    row("pactran", t, naive_total, basis, diff,
        f"{pf.iterations} L-BFGS it., bound {pf.bound:.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small size only (smoke test)")
    parser.add_argument("--naive-iters", type=int, default=2,
                        help="EM iterations the naive NLEEP is timed on")
    parser.add_argument("--naive-pactran-iters", type=int, default=4,
                        help="L-BFGS iterations the naive PACTran is timed on (large size)")
    parser.add_argument("--scores", default="",
                        help="comma-separated subset of " + ",".join(TARGETS) + " (default all)")
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = parser.parse_args()
    args.selected = [x.strip() for x in args.scores.split(",") if x.strip()] or list(TARGETS)
    if not set(args.selected) <= set(TARGETS):
        parser.error(f"unknown scores {sorted(set(args.selected) - set(TARGETS))}")
    sizes = [(2500, 2048, 100), (10000, 2048, 100)]
    if args.quick:
        sizes = [(500, 256, 20)]

    load = load_average()
    rows: list[str] = []
    for n, d, c in sizes:
        bench_size(n, d, c, args, rows)
    lines = [
        "# Scorer benchmark: NLEEP, SFDA, PACTran, ETran, NCTI",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_scorers_fitted.py"
        f"{''.join(' ' + a for a in sys.argv[1:])}`",
        "",
        machine_line(),
        "",
        f"Load average when started (other jobs share this machine): {load}; at the end: "
        f"{load_average()}.",
        "",
        "Data: synthetic ReLU-like features with class structure (class means N(0, 1) per "
        "dimension, noise 1.5, clipped at 0), float32 in, N / C samples per class. "
        "One Gram = F^T F in float64 (F already float64, best of 3), re-measured after every "
        "score in the same run; the ratio uses the fastest Gram seen so far at that size "
        "(conservative: the load varies). Each score is timed once from the float32 "
        "features; naive versions run in the same process right after.",
        "",
        "| score | N | D | C | one Gram (s) | seconds | / one Gram | target | naive (s) | "
        "naive timed on | speed-up | difference to naive | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    text = "\n".join(lines)
    if args.scores and not args.quick and RESULTS.exists():
        text = _merge(RESULTS.read_text(), rows, lines[2], lines[4], lines[6])
    if not args.no_write:
        write_results(RESULTS, text)


def _merge(old: str, rows: list[str], command: str, machine: str, load: str) -> str:
    """``old`` with the rows of the scores and sizes in ``rows`` replaced by them, and a
    line under the header giving the command, machine and load of the partial run."""
    fresh = {tuple(r.split(" | ")[:3]): r for r in rows}
    kept = old.split("\n")
    drop = {i for i, line in enumerate(kept) if line.startswith("Rows of ")}  # a former one
    kept = [line for i, line in enumerate(kept) if i not in drop and i + 1 not in drop]
    out = []
    for line in kept:
        out.append(fresh.pop(tuple(line.split(" | ")[:3]), line))
        if line.startswith("Load average when started"):
            names = sorted({r.split(" | ")[0].strip("| ") for r in rows})
            out += ["", f"Rows of {', '.join(names)} re-run since: {command} {machine} {load}"]
    return "\n".join(out[:-1] + list(fresh.values()) + out[-1:])


if __name__ == "__main__":
    main()
