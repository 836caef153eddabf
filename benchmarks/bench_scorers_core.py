"""Time LFC and LogME against the naive computations they replace.

* LFC: the closed form (no N x N matrix) vs the brute force that builds Theta = F F^T and
  K_Y explicitly and correlates their N^2 entries.
* LogME: one SVD + O(k C) fixed-point iterations vs the naive way that forms F^T F and, for
  every class and every iteration, factorises alpha I + beta F^T F (Cholesky, D^3).
  At large sizes the naive LogME is timed on a subset of classes and scaled linearly to all
  C classes (its cost is a sum of independent per-class fits); the report says so.

Run: .venv/bin/python benchmarks/bench_scorers_core.py [--quick]
Writes benchmarks/results/scorers_core.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import best_of, load_average, machine_line, make_data, write_results  # noqa: E402

from zoosel.scorers.lfc import label_feature_correlation  # noqa: E402
from zoosel.scorers.logme import logme_fit  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "scorers_core.md"


def lfc_brute(f: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of the explicit N x N matrices Theta and K_Y."""
    f = f.to(torch.float64)
    theta = f @ f.T
    k = (y[:, None] == y[None, :]).to(torch.float64) * 2 - 1
    theta -= theta.mean()
    k -= k.mean()
    return float((theta * k).sum() / (theta.norm() * k.norm()))


def logme_naive(
    f: torch.Tensor, y: torch.Tensor, classes: list[int], tol: float = 1e-8, max_iter: int = 1000
) -> list[float]:
    """LogME per class by forming G = F^T F and factorising alpha I + beta G each iteration."""
    f = f.to(torch.float64)
    n, d = f.shape
    g = f.T @ f
    eye = torch.eye(d, dtype=torch.float64)
    out = []
    for cls in classes:
        t = (y == cls).to(torch.float64)
        ft = f.T @ t
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            chol = torch.linalg.cholesky(alpha * eye + beta * g)
            m = beta * torch.cholesky_solve(ft[:, None], chol).squeeze(1)
            gamma = d - alpha * float(torch.cholesky_inverse(chol).diagonal().sum())
            m2 = float(m @ m)
            r2 = float(((t - f @ m) ** 2).sum())
            new_alpha, new_beta = gamma / m2, (n - gamma) / r2
            change = max(abs(new_alpha - alpha) / alpha, abs(new_beta - beta) / beta)
            alpha, beta = new_alpha, new_beta
            if change < tol:
                break
        chol = torch.linalg.cholesky(alpha * eye + beta * g)
        m = beta * torch.cholesky_solve(ft[:, None], chol).squeeze(1)
        r2 = float(((t - f @ m) ** 2).sum())
        logdet = 2 * float(torch.log(chol.diagonal()).sum())
        ev = (
            n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * r2 - alpha / 2 * float(m @ m) - logdet / 2
        )
        out.append(ev / n)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (smoke test)")
    parser.add_argument("--naive-classes", type=int, default=5,
                        help="classes the naive LogME is timed on at the large size")
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = parser.parse_args()

    lfc_sizes = [(500, 256, 20), (2500, 2048, 100), (8000, 512, 100)]
    logme_sizes = [(500, 256, 20), (2500, 2048, 100)]
    if args.quick:
        lfc_sizes, logme_sizes = lfc_sizes[:1], logme_sizes[:1]

    lines = [
        "# Scorer benchmark: LFC and LogME vs naive computations",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_scorers_core.py"
        f"{' --quick' if args.quick else ''}`",
        "",
        machine_line(),
        "",
        f"Load average when started (other jobs share this machine): {load_average()}.",
        "",
        "Data: synthetic ReLU-like features with class structure, float32 in, "
        "N/C samples per class. Times are the best of the repeats shown.",
        "",
        "## LFC: closed form vs brute-force N x N",
        "",
        "| N | D | C | closed form (s) | brute force (s) | speed-up | "
        "N x N memory avoided | abs. difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, d, c in lfc_sizes:
        f, y = make_data(n, d, c)
        reps = 5
        t_fast, v_fast = best_of(lambda f=f, y=y: label_feature_correlation(f, y), reps)
        t_slow, v_slow = best_of(lambda f=f, y=y: lfc_brute(f, y), reps)
        row = (
            f"| {n} | {d} | {c} | {t_fast:.4f} | {t_slow:.4f} | {t_slow / t_fast:.1f}x | "
            f"{2 * n * n * 8 / 2**20:.0f} MiB | {abs(v_fast - v_slow):.1e} |"
        )
        print("LFC", row, flush=True)
        lines.append(row)

    lines += [
        "",
        "## LogME: one SVD vs forming F^T F and factorising per class per iteration",
        "",
        "| N | D | C | SVD-based (s) | iterations (max over classes) | naive (s) | "
        "naive timed on | speed-up | max abs. difference per class |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, d, c in logme_sizes:
        f, y = make_data(n, d, c)
        reps = 3 if n * d <= 500 * 256 else 1
        t_fast, fit = best_of(lambda f=f, y=y: logme_fit(f, y), reps)
        n_cls = c if n * d <= 500 * 256 else min(args.naive_classes, c)
        classes = list(range(n_cls))
        t_sub, naive = best_of(lambda f=f, y=y, cl=classes: logme_naive(f, y, cl), 1)
        t_slow = t_sub * c / n_cls
        diff = float(np.max(np.abs(np.asarray(naive) - fit.evidence[:n_cls].numpy())))
        basis = f"all {c} classes" if n_cls == c else f"{n_cls} classes, scaled x{c / n_cls:g}"
        row = (
            f"| {n} | {d} | {c} | {t_fast:.3f} | {fit.iterations} | {t_slow:.1f} | {basis} | "
            f"{t_slow / t_fast:.0f}x | {diff:.1e} |"
        )
        print("LogME", row, flush=True)
        lines.append(row)

    lines += [
        "",
        "Notes: LFC forms only the smaller Gram (min(N, D)^2), so its gain over the brute force "
        "grows with N / D and is mostly memory (the brute force holds two N x N float64 "
        "matrices). The naive LogME differs from the SVD one only by round-off (N > D, full "
        "rank, so the (D - k) log alpha term is zero); its cost is C x iterations x D^3.",
        "",
    ]
    if not args.no_write:
        write_results(RESULTS, "\n".join(lines))


if __name__ == "__main__":
    main()
