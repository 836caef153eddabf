"""Time kNN accuracy and the linear probe against one Gram matrix and naive versions.

* Reference: ONE float64 Gram matrix of the same features (F^T F when N > D, else F F^T),
  best of 3, in the same run and with the same thread count.
* kNN, fast: :func:`zoosel.scorers.knn.knn_credits` (upper-triangle row panels, running
  top-k). Naive A, the straightforward version: scipy ``cdist(metric="cosine")`` and a
  full ``argsort`` per row (at N = 10,000 timed on the first 1,000 rows and scaled by
  N / 1,000, its cost being linear in the rows). Naive B: one torch N x N similarity
  matrix and ``topk`` (memory N^2).
* Linear probe, fast: :func:`zoosel.scorers.linear_probe.linear_probe` with
  ``solver="logistic"`` (the ridge default is in bench_peers.py). Naive: the same
  folds, standardisation and objective, each fold fitted from zero by
  ``torch.optim.LBFGS`` (history 10, strong Wolfe line search, float64, autograd loss)
  to the same gradient tolerance; at N = 10,000 timed on the first fold and scaled by
  the number of folds.

Equal results are checked: the kNN credits of every timed row, the probe's held-out
predictions on the timed folds (and the largest weight difference).

Data: ReLU of class means plus Gaussian noise, both with a power-law spectrum (variance
of the i-th principal direction ~ 1 / i, in a random basis), float32 in.

OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``, unless set otherwise in the
environment): on a machine shared with other jobs, actively spinning threads turn every
parallel region of the many small operations of an iterative fit into a wait for a CPU
time slice, which measures the machine's load rather than the algorithm.

Run: .venv/bin/python benchmarks/bench_scorers_probe.py [--quick] [--threads 2,1]
Writes benchmarks/results/scorers_probe.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.spatial.distance import cdist  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import best_of, cpu_model, gram, load_average, write_results  # noqa: E402

from zoosel.scorers import linear_probe as probe_mod  # noqa: E402
from zoosel.scorers.knn import knn_credits, unit_rows  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "scorers_probe.md"
K = 5
NOTES = """
Notes. kNN halves the multiply-adds of the full N x N similarity (upper-triangle panels)
and holds O(block x N) memory instead of N^2; naive B, one BLAS call for the whole
matrix, does twice the work but in a single large product, so the two are close in time
(the gain of the panels is memory). The probe's cost is iterations x two (n, D) x (D, C)
products per fold: the iteration count depends on the data (60-80 per fold here, where
the classes overlap; 25-30 when they separate), and ``torch.optim.LBFGS`` needs about as
many, so the speed-up over it comes from running the products in float32 (then checked
and finished in float64), the memory layout of the products and cheaper L-BFGS
bookkeeping, not from fewer iterations.
"""


def make_data(n: int, d: int, c: int, signal: float = 0.25, seed: int = 0):
    """ReLU-like class-structured features with a power-law spectrum; every class present."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    spec = (1.0 + np.arange(d)) ** -0.5
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    means = signal * (rng.normal(size=(c, d)) * spec) @ basis.T
    noise = (rng.normal(size=(n, d)) * spec) @ basis.T
    f = np.maximum(means[y] + noise + 0.5 * spec[0], 0.0)
    return torch.from_numpy(f).to(torch.float32), torch.from_numpy(y)


# --------------------------------------------------------------------------- kNN naive


def _credit_from_order(order: np.ndarray, y: np.ndarray, rows: np.ndarray, c: int) -> np.ndarray:
    """Majority vote of the first K neighbours in ``order``; a vote tie shares credit."""
    credit = np.empty(len(rows))
    for r, i in enumerate(rows):
        votes = np.bincount(y[order[r, :K]], minlength=c)
        winners = np.flatnonzero(votes == votes.max())
        credit[r] = (y[i] in winners) / len(winners)
    return credit


def knn_naive_cdist(f: torch.Tensor, y: torch.Tensor, rows: np.ndarray) -> np.ndarray:
    x = f.to(torch.float64).numpy()
    yn = y.numpy()
    dist = cdist(x[rows], x, metric="cosine")
    dist[np.arange(len(rows)), rows] = np.inf  # leave i itself out
    order = np.argsort(dist, axis=1, kind="stable")
    return _credit_from_order(order, yn, rows, int(yn.max()) + 1)


def knn_naive_full(f: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    x = unit_rows(f)
    sim = x @ x.T
    sim.fill_diagonal_(-torch.inf)
    order = torch.topk(sim, K, dim=1).indices.numpy()
    yn = y.numpy()
    return _credit_from_order(order, yn, np.arange(len(yn)), int(yn.max()) + 1)


# ------------------------------------------------------------------ linear probe naive


def probe_naive(
    f: torch.Tensor, y: torch.Tensor, folds: torch.Tensor, use_folds: list[int]
) -> tuple[dict[int, np.ndarray], dict[int, torch.Tensor]]:
    """Per fold: standardise, fit by torch.optim.LBFGS with an autograd loss, predict."""
    x = f.to(torch.float64)
    preds, weights = {}, {}
    for k in use_folds:
        train, test = folds != k, folds == k
        classes, y_train = torch.unique(y[train], return_inverse=True)
        mean, inv = probe_mod.standardise(x[train])
        xs = (x[train] - mean) * inv
        w = torch.zeros(x.shape[1], classes.numel(), dtype=torch.float64, requires_grad=True)
        b = torch.zeros(classes.numel(), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS(
            [w, b], lr=1, max_iter=5000, max_eval=10000, history_size=10,
            tolerance_grad=probe_mod.GTOL, tolerance_change=0.0, line_search_fn="strong_wolfe",
        )

        def closure(xs=xs, y_train=y_train, w=w, b=b, opt=opt):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(xs @ w + b, y_train)
            loss = loss + 0.5 * probe_mod.DEFAULT_L2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            logits = ((x[test] - mean) * inv) @ w + b
        preds[k] = classes[logits.argmax(dim=1)].numpy()
        weights[k] = w.detach()
    return preds, weights


# ------------------------------------------------------------------------------ main


def run_size(n: int, d: int, c: int, quick: bool) -> tuple[list[str], list[str]]:
    f, y = make_data(n, d, c)
    f64 = f.to(torch.float64)
    t_gram, _ = best_of(lambda: gram(f64), 3)
    big = n > 4000

    # kNN
    t_knn, credits = best_of(lambda: knn_credits(f, y, k=K), 2)
    rows = np.arange(1000) if big else np.arange(n)
    t_a, naive_a = best_of(lambda: knn_naive_cdist(f, y, rows), 1)
    t_a *= n / len(rows)
    t_b, naive_b = best_of(lambda: knn_naive_full(f, y), 1)
    fast = credits.numpy()
    equal_a = np.array_equal(fast[rows], naive_a)
    equal_b = np.array_equal(fast, naive_b)
    basis = f"first {len(rows)} rows, x{n / len(rows):g}" if big else "all rows"
    knn_row = (
        f"| {n} | {d} | {c} | {t_gram:.3f} | {t_knn:.3f} | **{t_knn / t_gram:.2f}x** | "
        f"{t_a:.1f} ({basis}) | **{t_a / t_knn:.1f}x** | {t_b:.2f} | {t_b / t_knn:.1f}x | "
        f"{float(fast.mean()):.4f} | {'yes' if equal_a and equal_b else 'NO'} |"
    )
    print("kNN", knn_row, flush=True)

    # linear probe
    t_probe, result = best_of(lambda: probe_mod.linear_probe(f, y, solver="logistic"), 1)
    n_folds = len(result.fits)
    use = [0] if big or quick else list(range(n_folds))
    t_naive, (preds, weights) = best_of(lambda: probe_naive(f, y, result.folds, use), 1)
    t_naive *= n_folds / len(use)
    differing, tested, w_diff = 0, 0, 0.0
    for k in use:
        fit = result.fits[k]
        test = (result.folds == k).numpy()
        classes = result.classes[k]
        x_test = f.to(torch.float64)[test]
        mean, inv = probe_mod.standardise(f.to(torch.float64)[result.folds != k])
        mine = classes[(((x_test - mean) * inv) @ fit.weight + fit.bias).argmax(dim=1)].numpy()
        differing += int((mine != preds[k]).sum())
        tested += len(mine)
        w_diff = max(w_diff, float((fit.weight - weights[k]).abs().max()))
    its = "/".join(str(fit.iterations) for fit in result.fits)
    basis = "all folds" if len(use) == n_folds else f"fold 1 of {n_folds}, x{n_folds}"
    probe_row = (
        f"| {n} | {d} | {c} | {t_gram:.3f} | {t_probe:.2f} | **{t_probe / t_gram:.1f}x** | "
        f"{its} | {t_naive:.1f} ({basis}) | **{t_naive / t_probe:.1f}x** | "
        f"{result.accuracy:.4f} | {differing} of {tested}, max dW {w_diff:.1e} |"
    )
    print("probe", probe_row, flush=True)
    return [knn_row], [probe_row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (smoke test)")
    parser.add_argument("--threads", default=str(os.cpu_count() or 2),
                        help="comma-separated torch thread counts to run, e.g. 2,1")
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = parser.parse_args()
    sizes = [(500, 256, 20)] if args.quick else [(2500, 2048, 100), (10000, 2048, 100)]
    threads = [int(t) for t in args.threads.split(",")]

    lines = [
        "# Scorer benchmark: kNN accuracy and linear probe",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_scorers_probe.py"
        f"{' --quick' if args.quick else ''} --threads {args.threads}`",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
        f"Python {platform.python_version()}, CPU only, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}.",
        "",
        f"Load average when started (other jobs share this machine): {load_average()}.",
        "",
        "Data: ReLU of power-law class means + power-law noise (see the script), float32 in, "
        "N / C samples per class. Gram = one float64 F^T F (N > D), best of 3. "
        "Ratios are within one run, same thread count.",
    ]
    for nt in threads:
        torch.set_num_threads(nt)
        knn_rows, probe_rows = [], []
        for n, d, c in sizes:
            a, b = run_size(n, d, c, args.quick)
            knn_rows += a
            probe_rows += b
        lines += [
            "",
            f"## torch threads: {nt}",
            "",
            f"### kNN accuracy (cosine, k = {K}); target <= 4x one Gram",
            "",
            "| N | D | C | Gram (s) | kNN (s) | / Gram | naive A: cdist + argsort (s) | "
            "speed-up vs A | naive B: N x N + topk (s) | speed-up vs B | accuracy | "
            "equal credits |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *knn_rows,
            "",
            "### Linear probe (5-fold logistic regression, l2 = 1e-3); target <= 30x one Gram",
            "",
            "| N | D | C | Gram (s) | probe (s) | / Gram | L-BFGS iterations per fold | "
            "naive: torch.optim.LBFGS per fold (s) | speed-up | accuracy | "
            "held-out predictions that differ from the naive fit |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *probe_rows,
        ]
        lines.append(
            f"\nLoad average after threads={nt}: {load_average()}."
        )
    lines.append(NOTES)
    if not args.no_write:
        write_results(RESULTS, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
