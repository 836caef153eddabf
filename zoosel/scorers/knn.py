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
later rows their best k' + 9 candidates with ``torch.topk``; a running top-(k' + 9) per
row is merged panel by panel. Below D = 384, where the top-k down a panel's columns
costs more than the products it saves, the panels are rows against all rows.

The float32 similarities only screen: a row whose k'-th and (k' + 1)-th float32
similarities differ by more than twice the float32 error bound (gamma_(D+4), about
1.2e-4 at D = 2048) has the exact top k', untied. The other rows (near ties: a few
per cent of typical data, all of degenerate data) are decided by the float64
similarities of their candidates when even the last candidate lies below the window
that the k'-th and anything tied with it must lie in, else recomputed in float64
against all samples. So the result is that of float64 similarities. Time O(N^2 D),
memory O(B N + N k).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoosel.errors import ScoringError
from zoosel.hookspecs import hookimpl
from zoosel.scorers.inputs import check_labels, row_blocks
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
_EXTRA = 8  # candidates kept per row beyond the k + 1 nearest
_TRIANGLE_MIN_D = 384  # upper-triangle panels from this many features on


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit Euclidean length (float64); all-zero rows stay zero.

    Each row is first divided by its largest absolute entry, so that neither tiny
    (1e-200) nor huge (1e200) rows underflow or overflow when squared.
    """
    return _Units(features, exact_screen=True).all()


class _Units:
    """The unit rows of ``features``: a screen copy (float32 when its products are exact
    to the bound of :func:`_screen_margin`, else float64) and float64 rows on demand.

    The per-row scales are computed once in float64 over cache-sized row blocks; a
    float64 unit row is always (f / peak) / norm from them, so any row is the same
    wherever it is rebuilt.
    """

    def __init__(self, features: torch.Tensor, exact_screen: bool = False) -> None:
        import torch

        f = _float_matrix(features)
        n, d = f.shape
        f64 = dict(dtype=torch.float64, device=f.device)
        self.features = f
        self.margin = 0.0 if exact_screen else _screen_margin(d, f.device)
        screen_dtype = torch.float32 if self.margin > 0 else torch.float64
        self.screen = torch.empty(n, d, dtype=screen_dtype, device=f.device)
        self.peak = torch.empty(n, 1, **f64)
        self.norm = torch.empty(n, 1, **f64)
        for start, stop in row_blocks(n, 8 * d, f.device.type):
            block = f[start:stop]
            low, high = torch.aminmax(block, dim=1, keepdim=True)
            peak = torch.maximum(high, -low).to(torch.float64)  # largest |entry|, or NaN
            if not bool(torch.isfinite(peak).all()):
                raise ScoringError("features contain non-finite values (NaN or inf).")
            self.peak[start:stop] = torch.where(peak > 0, peak, 1.0)
            unit = torch.div(block, self.peak[start:stop])  # in float64, a new tensor
            norm = torch.linalg.vector_norm(unit, dim=1, keepdim=True)
            self.norm[start:stop] = torch.where(norm > 0, norm, 1.0)
            self.screen[start:stop] = unit.div_(self.norm[start:stop])
        self._all: torch.Tensor | None = None
        # With at most float32 entries, f_i . f_j cannot overflow or underflow in float64,
        # so a similarity is that dot product over the two rows' scales (equal to the dot
        # of the unit rows to round-off), without scaling the rows themselves.
        self._raw_dots = f.dtype != torch.float64 and self.margin > 0
        self._scale = self.peak * self.norm if self._raw_dots else None

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """float64 unit rows ``index`` (any shape of indices; rows on the last axis)."""
        import torch

        if self.screen.dtype == torch.float64:
            return self.screen[index]
        return (self.features[index].to(torch.float64) / self.peak[index]) / self.norm[index]

    def similarities(self, rows: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """float64 similarities (r, m) of each of ``rows`` (r,) to its candidates (r, m)."""
        import torch

        if not self._raw_dots:
            return torch.bmm(self.rows(cand), self.rows(rows)[:, :, None]).squeeze(2)
        f = self.features
        dots = torch.bmm(f[cand].to(torch.float64), f[rows].to(torch.float64)[:, :, None])
        return dots.squeeze(2) / (self._scale[cand].squeeze(2) * self._scale[rows])

    def all(self) -> torch.Tensor:
        """All float64 unit rows (N, D), built once (only rare near-tie rows need them)."""
        import torch

        if self._all is None:
            if self.screen.dtype == torch.float64:
                self._all = self.screen
            else:
                self._all = self.rows(torch.arange(self.screen.shape[0],
                                                   device=self.screen.device))
        return self._all


def _float_matrix(x: torch.Tensor) -> torch.Tensor:
    """``x`` checked as a 2-D tensor and given a floating dtype (not copied if it has one;
    finiteness is checked block by block by :class:`_Units`)."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise ScoringError(f"features must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != 2:
        raise ScoringError(f"features must be 2-D (N, D), got shape {tuple(x.shape)}.")
    if x.device.type == "mps":  # no float64 on MPS
        x = x.cpu()
    x = x.detach()
    return x if x.dtype.is_floating_point else x.to(torch.float64)


def panel_rows(n: int) -> int:
    """Rows per similarity panel by default: a (rows, N) float64 panel within 64 MiB."""
    return max(64, _PANEL_BYTES // (8 * n))


def _screen_margin(d: int, device: torch.device) -> float:
    """The bound on the error of a float32 similarity of unit rows, 0 when the screen
    must be float64.

    In float32 the error of a_i . a_j for unit rows is at most gamma_(D+4) =
    (D+4) u / (1 - (D+4) u), u = 2^-24 (rounding of the rows, then of the D products and
    sums in any order). When float32 matrix products may run in lower precision (TF32,
    bfloat16) or D is too large for the bound, the screen is float64 and exact (bound 0).
    """
    import torch

    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    exact32 = torch.get_float32_matmul_precision() == "highest" and not tf32
    units = (d + 4) * 2.0**-24
    if not exact32 or units > 0.01:
        return 0.0
    return units / (1 - units)


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


def _tie_rule_votes(
    sim: torch.Tensor, col_labels: torch.Tensor, k: int, num_classes: int
) -> torch.Tensor:
    """Class votes of the rows of ``sim`` under the tie rule; ``col_labels``: the label of
    each column, (N,) for all samples or (rows, m) for per-row candidate columns."""
    import torch

    t = torch.topk(sim, k, dim=1).values[:, k - 1:k]  # the k-th largest
    closer = sim > t + TIE_TOL
    tied = (sim - t).abs() <= TIE_TOL
    n_closer = closer.sum(dim=1, keepdim=True)
    share = (k - n_closer).to(sim.dtype) / tied.sum(dim=1, keepdim=True).to(sim.dtype)
    weights = closer.to(sim.dtype) + tied.to(sim.dtype) * share
    votes = torch.zeros(sim.shape[0], num_classes, dtype=sim.dtype, device=sim.device)
    if col_labels.ndim == 1:
        return votes.index_add_(1, col_labels, weights)
    return votes.scatter_add_(1, col_labels, weights)


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
        out.append(_credit_from_votes(_tie_rule_votes(sim, y, k, num_classes), y[r]))
    return torch.cat(out)


def _candidate_rows_credit(
    units: _Units, rows: torch.Tensor, cand: torch.Tensor, y: torch.Tensor, k: int,
    num_classes: int, budget: int,
) -> torch.Tensor:
    """The tie rule for ``rows`` from float64 similarities to their candidates ``cand``
    (rows, m) only, which hold every sample that can be among or tied with the k-th."""
    import torch

    out = []
    chunk = max(1, budget // (cand.shape[1] * units.screen.shape[1]))
    for start in range(0, rows.numel(), chunk):
        r, c = rows[start:start + chunk], cand[start:start + chunk]
        # a slot at -inf may hold i itself or no sample at all (-1): neither is a neighbour
        empty = (c == r[:, None]) | (c < 0)
        c = c.clamp_min(0)
        sim = units.similarities(r, c).masked_fill_(empty, -torch.inf)  # (rows, m)
        out.append(_credit_from_votes(_tie_rule_votes(sim, y[c], k, num_classes), y[r]))
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

    units = _Units(features)
    x = units.screen
    n = x.shape[0]
    y = check_labels(labels, n, num_classes).to(x.device)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ScoringError(f"k must be a positive integer, got {k!r}.")
    if block_size is not None and (not isinstance(block_size, int) or block_size < 1):
        raise ScoringError(f"block_size must be a positive integer, got {block_size!r}.")
    k = min(k, n - 1)
    c = int(y.max()) + 1
    # The upper triangle halves the products but needs a top-k down the columns of each
    # panel too, which costs about as much as D ~ 400 multiply-adds per pair: below
    # that, whole rows are cheaper. By default at least 8 panels for the triangle.
    triangle = x.shape[1] >= _TRIANGLE_MIN_D
    block = block_size or (max(64, min(panel_rows(n), -(-n // 8))) if triangle
                           else panel_rows(n))
    # the (k+1)-th candidate tells whether the k-th is tied; the further ones settle
    # near ties without recomputing the row against all samples
    # (fewer with tiny panels: a merge holds 2 keep candidates per row, within B per row)
    keep = min(k + 1 + min(_EXTRA, max(0, block // 2 - k - 1)), n)

    # Screen in float32, where the products are twice as fast, and keep a row's float32
    # top k only when its k-th and (k+1)-th similarities differ by more than twice the
    # float32 error bound (then they are the exact top k and not tied); the other rows
    # are recomputed in float64 against all samples.
    screen, margin = units.screen, units.margin
    vals = torch.full((n, keep), -torch.inf, dtype=screen.dtype, device=x.device)
    idx = torch.full((n, keep), -1, dtype=torch.int64, device=x.device)
    for start in range(0, n, block):
        stop = min(start + block, n)
        first = start if triangle else 0
        panel = screen[start:stop] @ screen[first:].T  # rows start:stop against first:n
        diag = torch.arange(stop - start, device=x.device)
        panel[diag, diag + start - first] = -torch.inf  # only index i itself is excluded
        m = min(keep, panel.shape[1])
        pv, pi = torch.topk(panel, m, dim=1)
        rows = slice(start, stop)
        vals[rows], idx[rows] = _merge(vals[rows], idx[rows], pv, pi + first)
        if triangle and stop < n:  # by symmetry, the rows after this panel against its rows
            m = min(keep, stop - start)
            cv, ci = torch.topk(panel[:, stop - start:], m, dim=0)
            vals[stop:], idx[stop:] = _merge(vals[stop:], idx[stop:], cv.T, ci.T + start)
    del panel

    credit = torch.empty(n, dtype=torch.float64, device=x.device)
    # When k = N - 1 the (k+1)-th candidate is i itself, at -inf: never a tie.
    sure = (vals[:, k - 1] - vals[:, k]).to(torch.float64) > 2 * margin + TIE_TOL
    plain = sure.nonzero().squeeze(1)
    if plain.numel():
        votes = torch.zeros(plain.numel(), c, dtype=torch.float64, device=x.device)
        votes.scatter_add_(1, y[idx[plain, :k]], torch.ones(plain.numel(), k,
                                                           dtype=torch.float64,
                                                           device=x.device))
        credit[plain] = _credit_from_votes(votes, y[plain])
    # Near ties: when even the last candidate is below the window in which the k-th
    # and anything tied with it must lie, the candidates' float64 similarities decide;
    # otherwise (many near-equal similarities) the row is recomputed against all.
    close = ~sure
    window = (vals[:, k] - vals[:, keep - 1]).to(torch.float64) > 2 * margin + TIE_TOL
    settled = (close & (window | (keep == n))).nonzero().squeeze(1)
    if settled.numel():
        credit[settled] = _candidate_rows_credit(units, settled, idx[settled], y, k, c,
                                                 block * n)
    rest = (close & ~(window | (keep == n))).nonzero().squeeze(1)
    if rest.numel():
        credit[rest] = _tied_rows_credit(units.all(), rest, y, k, c, block)
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
