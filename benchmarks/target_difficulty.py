"""How hard generated target tasks are for a built zoo, before fine-tuning on them.

For each task and each zoo member: 5-shot nearest-centroid and ridge accuracy on the
member's frozen features (mean over a few draws of the shots, 30 test images per class),
and the same on raw pixels for reference. A new target of the ``diverse`` build is kept
when its best member lands between about 0.38 and 0.78 (neither solved by every member
nor by none) and different families win different tasks.

    python benchmarks/target_difficulty.py --zoo /work/bench-diverse/zoo materials grey_levels

Run from the repository root; it prints one line per task and, with ``--json``, writes
every member's figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's zoosel

from zoosel.bench import nets  # noqa: E402
from zoosel.bench.domains import generate, get_domain  # noqa: E402

Classifier = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def nearest_centroid(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray) -> np.ndarray:
    """Labels of ``xte`` by the nearest class mean of ``xtr`` (Euclidean)."""
    classes = np.unique(ytr)
    cent = np.stack([xtr[ytr == c].mean(0) for c in classes])
    d = (cent**2).sum(1)[None] - 2.0 * xte @ cent.T
    return classes[d.argmin(1)]


def ridge(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, lam: float = 1.0) -> np.ndarray:
    """Labels of ``xte`` by ridge regression on centred one-hot targets, features
    standardised on ``xtr``; the penalty is ``lam`` times the number of shots (solved in
    the dual: there are far fewer shots than features)."""
    classes = np.unique(ytr)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    a, b = (xtr - mu) / sd, (xte - mu) / sd
    t = (ytr[:, None] == classes[None]).astype(np.float64)
    alpha = np.linalg.solve(a @ a.T + lam * len(a) * np.eye(len(a)), t - t.mean(0))
    return classes[(b @ (a.T @ alpha)).argmax(1)]


def task_data(task: str, shots: int = 5, draws: int = 3, test: int = 30
              ) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    """``draws`` few-shot training sets and one test set of ``task`` (seeds apart from the
    build's splits)."""
    domain = get_domain(task)
    train = [generate(domain, shots, seed=1000 + k) for k in range(draws)]
    return train, generate(domain, test, seed=2000)


def accuracies(embed: Callable[[np.ndarray], np.ndarray],
               train: Sequence[tuple[np.ndarray, np.ndarray]],
               test: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Mean nearest-centroid and ridge accuracy over the training draws."""
    fte = embed(test[0])
    out: dict[str, list[float]] = {"centroid": [], "ridge": []}
    for x, y in train:
        ftr = embed(x)
        for name, fn in (("centroid", nearest_centroid), ("ridge", ridge)):
            out[name].append(float((fn(ftr, y, fte) == test[1]).mean()))
    return {k: float(np.mean(v)) for k, v in out.items()}


def pixels(images: np.ndarray) -> np.ndarray:
    """Raw pixels in [0, 1], flattened."""
    return images.reshape(len(images), -1).astype(np.float64) / 255.0


def member_embedding(folder: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A zoo member's frozen pre-logit features of uint8 images."""
    import torch

    model = nets.load(folder).eval()

    def embed(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = model.forward_features(nets.to_input(images))
            return model.forward_head(x, pre_logits=True).double().numpy()

    return embed


def difficulty(zoo: Path, tasks: Sequence[str], draws: int = 3
               ) -> dict[str, dict[str, dict[str, float]]]:
    """{task: {member or ``pixels``: {``centroid``, ``ridge``}}} over every member of
    ``zoo`` (folders holding a ``zoo.json``)."""
    members = sorted(p for p in zoo.iterdir() if (p / nets.MEMBER_FILE).is_file())
    data = {t: task_data(t, draws=draws) for t in tasks}
    out = {t: {"pixels": accuracies(pixels, *data[t])} for t in tasks}
    for folder in members:
        embed = member_embedding(folder)
        for t in tasks:
            out[t][folder.name] = accuracies(embed, *data[t])
    return out


def summary(task: str, figures: dict[str, dict[str, float]]) -> str:
    """One line: the best member, the runner-up, the median, pixels, best per family."""
    best = sorted(((max(v.values()), k) for k, v in figures.items() if k != "pixels"),
                  reverse=True)
    family: dict[str, float] = {}
    for acc, name in best:
        family.setdefault(name.split("-")[0] + ("-gen" if "generalist" in name else ""), acc)
    top, px = figures[best[0][1]], figures["pixels"]
    return (f"{task:18s} best {best[0][0]:.2f} ({best[0][1]}: centroid {top['centroid']:.2f}, "
            f"ridge {top['ridge']:.2f}), next {best[1][0]:.2f} ({best[1][1]}), median "
            f"{np.median([b[0] for b in best]):.2f}, pixels {max(px.values()):.2f} | "
            + " ".join(f"{k} {v:.2f}" for k, v in family.items()))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="+", help="generated target tasks")
    parser.add_argument("--zoo", type=Path, required=True, help="a build's zoo folder")
    parser.add_argument("--draws", type=int, default=3, help="few-shot draws per task")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", type=Path, help="write every member's figures here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    result = difficulty(args.zoo, args.tasks, args.draws)
    for task, figures in result.items():
        print(summary(task, figures))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
