"""Time linft against its former route (scorer version 1), on 1 and 2 threads, in one run.

Former (``peers/_linft_01.py``, kept as it was): a thin SVD of the scaled N x D features
when D < N, numpy's ``eigh`` of the N x N kernel otherwise, on numpy's BLAS. Now
(``zoosel.scorers.linft``): ``eigh`` of the cheaper of the N x N kernel and the D x D Gram
(then U = X V / sqrt(e)), in torch (its LAPACK, the engine's thread count). The same
formulas after the decomposition; the table gives the largest relative difference of
the GCV curve and of the leave-one-out predictions, and whether the chosen ridge and the
accuracy (the score) are equal.

Each thread count runs in its own process with torch's threads and numpy's BLAS threads
(``OPENBLAS_NUM_THREADS``) both set to it. Reference ("one Gram"): the min(N, D) side
Gram of the float64 features in torch, best of 3, re-measured after each route. The
default sort's other components (``consensus.COMPONENTS``) are timed on the same
features, so the default's cost before / after is theirs + linft's former / new time.

Run: .venv/bin/python benchmarks/bench_linft.py [--quick] [--no-write]
Writes benchmarks/results/linft.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import best_of, cpu_model, make_data  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "linft.md"
SIZES = ((500, 2048, 100), (2500, 2048, 100), (20000, 768, 100))
QUICK_SIZES = ((200, 512, 20), (1000, 256, 20))


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def time_size(threads: int, n: int, d: int, c: int, scorers: dict) -> dict:
    """One size: one Gram, the former and the new linft, the default's other components."""
    from peers import _linft_01 as former

    from zoosel.scorers import consensus
    from zoosel.scorers.linft import linft_fit
    from zoosel.types import ScoreInputs

    f, y = make_data(n, d, c)
    g64 = f.double()

    def side():
        return g64.T @ g64 if n > d else g64 @ g64.T

    grams = [best_of(side, 3)[0]]
    slow = n * d >= 2500 * 2048
    t_old, old = best_of(lambda: former.linft_fit(f, y), 2 if slow else 5)
    grams.append(best_of(side, 3)[0])
    linft_fit(f, y)  # warm-up of torch's LAPACK path
    t_new, new = best_of(lambda: linft_fit(f, y), 3 if slow else 5)
    grams.append(best_of(side, 3)[0])
    inputs = ScoreInputs(labels=y, num_classes=c, features=f)
    others = {name: best_of(lambda fn=scorers[name].fn: fn(inputs), 2)[0]
              for name in consensus.COMPONENTS if name != "linft"}
    return {
        "threads": threads, "n": n, "d": d, "c": c, "gram": min(grams),
        "former": t_old, "new": t_new, "others": others,
        "gcv_diff": _rel(new.gcv_curve, old.gcv_curve),
        "loo_diff": _rel(new.loo_predictions, old.loo_predictions),
        "same": new.lam == old.lam and new.accuracy == old.accuracy,
        "accuracy": new.accuracy, "lam": new.lam,
        "former_accuracy": old.accuracy, "former_lam": old.lam,
    }


def child(threads: int, sizes: list[tuple[int, int, int]]) -> list[dict]:
    """The timings of one thread count (run in a process whose BLAS threads are set)."""
    import torch

    from zoosel.api import list_scorers

    torch.set_num_threads(threads)
    scorers = list_scorers()
    rows = []
    for n, d, c in sizes:
        rows.append(time_size(threads, n, d, c, scorers))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _former(r: dict) -> str:
    return f"; former: score {r['former_accuracy']:.4f}, lambda {r['former_lam']:.3g}"


def table(rows: list[dict]) -> list[str]:
    out = [
        "| threads | N | D | C | one Gram (s) | former (s) | now (s) | former / now | "
        "now / one Gram | GCV curve, rel. diff | LOO predictions, rel. diff | "
        "same ridge and score | default's components, former -> now (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = sum(r["others"].values())
        parts = ", ".join(f"{k} {v:.2f}" for k, v in r["others"].items())
        out.append(
            f"| {r['threads']} | {r['n']} | {r['d']} | {r['c']} | {r['gram']:.3f} | "
            f"{r['former']:.3f} | {r['new']:.3f} | {r['former'] / r['new']:.1f}x | "
            f"{r['new'] / r['gram']:.1f}x | {r['gcv_diff']:.1e} | {r['loo_diff']:.1e} | "
            f"{'yes' if r['same'] else 'no'} (score {r['accuracy']:.4f}, lambda "
            f"{r['lam']:.3g}{'' if r['same'] else _former(r)}) | "
            f"{base + r['former']:.2f} -> {base + r['new']:.2f} "
            f"({(base + r['former']) / (base + r['new']):.1f}x; {parts}) |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (smoke test)")
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = list(QUICK_SIZES if args.quick else SIZES)
    if args.child:
        print(json.dumps(child(args.child, sizes)))
        return

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = []
    for threads in (1, 2):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads),
               "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        cmd = [sys.executable, __file__, "--child", str(threads)] + (["--quick"] if args.quick
                                                                     else [])
        done = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True)
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    import torch

    lines = [
        "# linft: the kernel's eigendecomposition from its cheaper side, before / after",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_linft.py"
        f"{''.join(' ' + a for a in sys.argv[1:])}`",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
        f"numpy {np.__version__}, Python {platform.python_version()}, CPU only, float64.",
        "",
        f"Load average when started (other jobs share this machine): {load}; at the end: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "Data: `make_data` (ReLU-like features with class structure, float32 in, N / C "
        "samples per class). Former: `benchmarks/peers/_linft_01.py` (scorer version 1: "
        "thin SVD of the features when D < N, numpy's eigh of the N x N kernel otherwise, "
        "numpy's BLAS). Now: `zoosel.scorers.linft` (eigh of the min(N, D)-side kernel or "
        "Gram in torch). Each thread count in its own process, torch and numpy's BLAS both "
        "on that many threads; best of 2 (former) and 3 (now) at the two larger sizes, "
        "of 5 at N = 500. One Gram: the min(N, D) side float64 product, the fastest of "
        "three re-measurements. The default's components: the others timed once more "
        "(best of 2) on the same features, plus linft's former or new time.",
        "",
        *table(rows),
        "",
        "The values: linft version 2 computes the GCV residual and 1 - tr(H) / N without "
        "cancellation. Where N <= D both go to 0 with the ridge, and the former's values at "
        "the grid's small end were rounding noise (up to 1e-4 relative at lambda = 1e-6, "
        "different between numpy's BLAS on 1 and 2 threads); there the GCV curves differ "
        "by that much and, when the curve is flat at that end, the chosen ridge can differ. "
        "`tests/test_linft.py` checks the new values against a 40-digit evaluation down to "
        "lambda = 1e-10. Elsewhere the curves and predictions agree to rounding.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
