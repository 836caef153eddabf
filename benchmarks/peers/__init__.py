"""Re-implementations of the peers' algorithms, one module per score, for bench_peers.py.

Each module follows the contract in bench_peers.py's docstring: ``SCORE``, ``TITLE``,
``NOTES``, ``cases(quick)`` and ``run_case(case, repeats)``. The peers' algorithms are
written here from the papers and from reading their public code; none of it is copied.
"""

from __future__ import annotations

import numpy as np
import torch
from _common import make_data


def case_data(case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """make_data's seeded features for ``case``; with ``case["label_noise"] = q`` a fraction
    q of the labels is redrawn uniformly (seeded), which makes the classes overlap."""
    f, y = make_data(case["n"], case["d"], case["c"])
    noise = float(case.get("label_noise", 0.0))
    if noise > 0:
        rng = np.random.default_rng(1)
        yy = y.numpy().copy()
        flip = rng.random(yy.size) < noise
        yy[flip] = rng.integers(0, case["c"], int(flip.sum()))
        present = np.unique(yy)
        if present.size < case["c"]:  # keep every class present
            yy[: case["c"]] = np.arange(case["c"])
        y = torch.from_numpy(yy)
    return f, y
