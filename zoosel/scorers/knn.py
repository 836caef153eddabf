"""kNN accuracy: leave-one-out k-nearest-neighbour accuracy of the features.

Reference: Sorkhei, Matsoukas, Fredin Haslum, Konuk, Smith 2025, "k-NN as a Simple and
Effective Estimator of Transferability" (TMLR, arXiv 2503.18528): across 23 metrics and
42,000 transfer experiments, a plain k-NN evaluation of the pre-trained features
predicted transfer performance best.

Formula. Each row is scaled to unit length (rows that are all zero stay zero) and the
similarity of samples i and j is the cosine s_ij = f_i . f_j / (|f_i| |f_j|) (0 when
either row is zero). For every sample i, the candidates are all j != i: only index i
itself is left out, so a duplicate of sample i (another index with the same features)
is a legitimate neighbour, at similarity 1. With k' = min(k, N - 1) and t_i the k'-th
largest s_ij, the neighbours and their votes are::

    A_i = {j : s_ij > t_i + tol}              (strictly closer than the k'-th)
    T_i = {j : |s_ij - t_i| <= tol}           (tied with the k'-th)
    w_ij = 1 on A_i,  (k' - |A_i|) / |T_i| on T_i,  0 elsewhere   (sum_j w_ij = k')
    v_ic = sum_{j : y_j = c} w_ij
    P_i  = {c : v_ic >= max_c' v_ic' - 1e-9}  (the predicted classes)
    credit_i = 1[y_i in P_i] / |P_i|,         kNN accuracy = mean_i credit_i

Choices:

* distance: cosine (the usual k-NN evaluation of pre-trained and self-supervised
  features); it ignores each sample's feature norm.
* k = 5 by default (``k``); k' = min(k, N - 1) when there are fewer other samples.
* ties, with tol = 1e-10 on the cosine: neighbours tied with the k'-th share its
  remaining slots equally (instead of being cut by index), and a tie between classes
  in the vote gives fractional credit 1 / |P_i| (the expected accuracy of a uniformly
  random choice among the tied classes). Neither the sample order nor the label ids
  can change the result.

Invariances: the score depends on the label partition and the set of samples only, so
it is invariant to relabelling the classes and to permuting the samples; it is scale
invariant (any nonzero global scale, and per-sample scale too) and rotation invariant
(any orthogonal map of the feature space). It is not invariant to translation.

Degenerate inputs: one class, fewer than 2 samples, NaN or inf: ScoringError. A class
with one sample: that sample has no same-class neighbour and gets credit 0. Constant
features (all rows equal): all similarities tie, every sample votes with all others
equally, so the score is the mean over i of 1[y_i is a majority class among the others]
/ (number of such classes). N < D, D = 1 (similarities are then +-1) and duplicated
samples are ordinary inputs. Any float dtype; computed in float64.

Direction: higher is better (an accuracy in [0, 1]); no sign flip.

Cost: the N x N similarities are never held at once. Rows are processed in panels of B
rows against the rows that follow them (the upper triangle only, ~N^2 D / 2
multiply-adds in all, in float32), each panel giving its rows and, by symmetry, the
later rows their best k' + 1 candidates with ``torch.topk``; a running top-(k' + 1) per
row is merged panel by panel. The float32 similarities are screens only: a row whose
k'-th and (k' + 1)-th float32 similarities differ by more than twice the float32
error bound (gamma_(D+4), about 1.2e-4 at D = 2048) has the exact top k', untied; the
other rows (near ties, a few per cent of typical data, all of degenerate data) are
recomputed in float64 against all samples and get the tie rule. So the result is that
of float64 similarities. Time O(N^2 D), memory O(B N + N k).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoosel.errors import ScoringError
from zoosel.hookspecs import hookimpl
from zoosel.scorers.inputs import as_float64, check_labels
from zoosel.types import Need, ScoreInputs, Scorer

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

__all__ = [
    "DEFAULT_K",
    "TIE_TOL",
    "knn_accuracy",
    "knn_credits",
    "panel_rows",
    "register_scorers",
    "unit_rows",
]

DEFAULT_K = 5
TIE_TOL = 1e-10  # cosine similarities closer than this are tied
_VOTE_TOL = 1e-9  # class votes closer than this are tied
_PANEL_BYTES = 64 * 2**20  # similarity panel budget when block_size is not given


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit Euclidean length (float64); all-zero rows stay zero.

    Each row is first divided by its largest absolute entry, so that neither tiny
    (1e-200) nor huge (1e200) rows underflow or overflow when squared.
    """
    import torch

    f = as_float64(features, "features")
    peak = f.abs().amax(dim=1, keepdim=True)
    f = f / torch.where(peak > 0, peak, 1.0)
    norm = torch.linalg.vector_norm(f, dim=1, keepdim=True)
    return f / torch.where(norm > 0, norm, 1.0)


def panel_rows(n: int) -> int:
    """Rows per similarity panel by default: a (rows, N) float64 panel within 64 MiB."""
    return max(64, _PANEL_BYTES // (8 * n))


def _screening(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The unit rows ``x`` (float64) for the similarity screen, and the bound on the error
    of a screened similarity.

    In float32 the error of a_i . a_j for unit rows is at most gamma_(D+4) =
    (D+4) u / (1 - (D+4) u), u = 2^-24 (rounding of the rows, then of the D products and
    sums in any order). When float32 matrix products may run in lower precision (TF32,
    bfloat16) or D is too large for the bound, the screen is float64 and exact (bound 0).
    """
    import torch

    d = x.shape[1]
    tf32 = x.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    exact32 = torch.get_float32_matmul_precision() == "highest" and not tf32
    units = (d + 4) * 2.0**-24
    if not exact32 or units > 0.01:
        return x, 0.0
    return x.to(torch.float32), units / (1 - units)


def _merge(
    vals: torch.Tensor, idx: torch.Tensor, new_vals: torch.Tensor, new_idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the best ``vals.shape[1]`` of the running and the new candidates, per row."""
    import torch

    all_vals = torch.cat([vals, new_vals], dim=1)
    all_idx = torch.cat([idx, new_idx], dim=1)
    best, pos = torch.topk(all_vals, vals.shape[1], dim=1)
    return best, all_idx.gather(1, pos)


def _credit_from_votes(votes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1[y_i among the top-voted classes] / (number of top-voted classes), per row."""
    top = votes.amax(dim=1, keepdim=True)
    winners = votes >= top - _VOTE_TOL
    hit = winners.gather(1, y[:, None]).squeeze(1)
    return hit.to(votes.dtype) / winners.sum(dim=1).to(votes.dtype)


def _tied_rows_credit(
    x: torch.Tensor, rows: torch.Tensor, y: torch.Tensor, k: int, num_classes: int,
    block: int,
) -> torch.Tensor:
    """The full tie rule for ``rows``, each against all samples (recomputed in blocks)."""
    import torch

    out = []
    for start in range(0, rows.numel(), block):
        r = rows[start:start + block]
        sim = x[r] @ x.T  # (m, N)
        sim[torch.arange(r.numel(), device=x.device), r] = -torch.inf  # only i itself
        t = torch.topk(sim, k, dim=1).values[:, k - 1:k]  # the k-th largest
        closer = sim > t + TIE_TOL
        tied = (sim - t).abs() <= TIE_TOL
        n_closer = closer.sum(dim=1, keepdim=True)
        share = (k - n_closer).to(sim.dtype) / tied.sum(dim=1, keepdim=True).to(sim.dtype)
        weights = closer.to(sim.dtype) + tied.to(sim.dtype) * share
        votes = torch.zeros(r.numel(), num_classes, dtype=sim.dtype, device=x.device)
        votes.index_add_(1, y, weights)
        out.append(_credit_from_votes(votes, y[r]))
    return torch.cat(out)


def knn_credits(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None, *,
    k: int = DEFAULT_K, block_size: int | None = None,
) -> torch.Tensor:
    """Per-sample leave-one-out credit in [0, 1] (float64, shape (N,)); see module doc.

    :param k: number of neighbours (``min(k, N - 1)`` are used).
    :param block_size: rows per similarity panel; by default as many as fit in 64 MiB.
    """
    import torch

    x = unit_rows(features)
    n = x.shape[0]
    y = check_labels(labels, n, num_classes).to(x.device)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ScoringError(f"k must be a positive integer, got {k!r}.")
    if block_size is not None and (not isinstance(block_size, int) or block_size < 1):
        raise ScoringError(f"block_size must be a positive integer, got {block_size!r}.")
    k = min(k, n - 1)
    c = int(y.max()) + 1
    block = block_size or panel_rows(n)
    keep = k + 1  # <= N; the (k+1)-th candidate tells whether the k-th is tied

    # Screen in float32, where the products are twice as fast, and keep a row's float32
    # top k only when its k-th and (k+1)-th similarities differ by more than twice the
    # float32 error bound (then they are the exact top k and not tied); the other rows
    # are recomputed in float64 against all samples.
    screen, margin = _screening(x)
    vals = torch.full((n, keep), -torch.inf, dtype=screen.dtype, device=x.device)
    idx = torch.full((n, keep), -1, dtype=torch.int64, device=x.device)
    for start in range(0, n, block):
        stop = min(start + block, n)
        panel = screen[start:stop] @ screen[start:].T  # rows start:stop against start:n
        diag = torch.arange(stop - start, device=x.device)
        panel[diag, diag] = -torch.inf  # only index i itself is excluded
        m = min(keep, panel.shape[1])
        pv, pi = torch.topk(panel, m, dim=1)
        rows = slice(start, stop)
        vals[rows], idx[rows] = _merge(vals[rows], idx[rows], pv, pi + start)
        if stop < n:  # by symmetry, the rows after this panel against its rows
            m = min(keep, stop - start)
            cv, ci = torch.topk(panel[:, stop - start:], m, dim=0)
            vals[stop:], idx[stop:] = _merge(vals[stop:], idx[stop:], cv.T, ci.T + start)
    del panel

    credit = torch.empty(n, dtype=x.dtype, device=x.device)
    # When k = N - 1 the (k+1)-th candidate is i itself, at -inf: never a tie.
    sure = (vals[:, k - 1] - vals[:, k]).to(torch.float64) > 2 * margin + TIE_TOL
    plain = sure.nonzero().squeeze(1)
    if plain.numel():
        votes = torch.zeros(plain.numel(), c, dtype=x.dtype, device=x.device)
        votes.scatter_add_(1, y[idx[plain, :k]], torch.ones(plain.numel(), k, dtype=x.dtype,
                                                           device=x.device))
        credit[plain] = _credit_from_votes(votes, y[plain])
    close = (~sure).nonzero().squeeze(1)
    if close.numel():
        credit[close] = _tied_rows_credit(x, close, y, k, c, block)
    return credit


def knn_accuracy(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None, *,
    k: int = DEFAULT_K, block_size: int | None = None,
) -> float:
    """Leave-one-out cosine k-NN accuracy (higher is better); see the module docstring.

    :param features: (N, D) float features, any dtype or device (computed in float64).
    :param labels: (N,) integer class labels.
    :param num_classes: optional upper bound used only to validate ``labels``.
    :param k: number of neighbours, default 5 (``min(k, N - 1)`` are used).
    :param block_size: rows per similarity panel (memory O(block_size N)).
    :raises ScoringError: on unusable input.
    """
    credit = knn_credits(features, labels, num_classes, k=k, block_size=block_size)
    return float(credit.mean())


def _score(inputs: ScoreInputs) -> float:
    if inputs.features is None:
        raise ScoringError("kNN accuracy needs features.")
    return knn_accuracy(inputs.features, inputs.labels, inputs.num_classes)


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register kNN accuracy."""
    register(
        Scorer(
            name="knn",
            fn=_score,
            needs=frozenset({Need.FEATURES}),
            summary="Leave-one-out cosine k-nearest-neighbour accuracy (k = 5) of the "
            "features.",
            reference="Sorkhei et al. 2025, TMLR, k-NN as a Simple and Effective Estimator "
            "of Transferability (arXiv 2503.18528)",
            cost="O(N^2 D / 2) in row panels, memory O(block N)",
        )
    )
