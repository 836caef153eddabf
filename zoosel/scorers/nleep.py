"""NLEEP, Gaussian-mixture LEEP (Li et al. 2021, CVPR, "Ranking neural checkpoints",
arXiv 2011.11200).

Formula. The features are centred and projected on their first k principal components,
k the smallest number whose cumulative explained variance exceeds 80%. A Gaussian mixture
with K = min(5 C, N) components (C the classes present) is fitted to the projected
features z_i by EM, and its posteriors replace a source head's softmax in LEEP::

    p(z = j | x_i) = w_j N(z_i; m_j, diag(s2_j)) / sum_l w_l N(z_i; m_l, diag(s2_l))
    NLEEP = LEEP(p(. | x), y)      (see :mod:`zoosel.scorers.leep`)

so NLEEP = (1/N) sum_i log sum_j P(y_i | j) p(j | x_i) with P(y | j) the empirical
conditional of the target label given the component. It is an average log-likelihood
(<= 0); some public copies drop the log (mean of the expected prediction): zoosel keeps
the paper's LEEP.

Mixture. DIAGONAL covariances (the paper uses scikit-learn's default, full ones). With
about N / (5 C) samples per component (5 at 25 images per class) a full d x d covariance
is singular and is entirely set by the regulariser, while d per-dimension variances can
be estimated; diagonal EM also costs O(N K d) per iteration instead of O(N K d^2 + K d^3).
The principal axes decorrelate the data globally, which is what makes a diagonal model
reasonable there.

Initialisation, as the reference (scikit-learn's ``GaussianMixture(init_params="kmeans")``):
k-means first, then one M-step from its hard assignments, so every component starts as a
compact cluster (its own mean, its own variances, its share of the samples).

* k-means++ seeding (``seed``): the first centre uniformly, each next one with probability
  proportional to the squared distance to the nearest centre chosen so far (uniformly when
  all those distances are zero). scikit-learn's greedy variant draws 2 + log K candidates
  per step and keeps the best: another draw of the same distribution's family, so the two
  reach different (equally valid) local optima.
* Lloyd's iterations: assign each sample to its nearest centre, move each centre to its
  cluster's mean; an emptied cluster takes the sample farthest from its own centre. Stop
  when no assignment changes or the summed squared centre shift is below 1e-4 times the
  mean per-dimension variance (scikit-learn's rule), at most 300 iterations; the final
  assignment is to the final centres. Clusters still empty then (only with fewer distinct
  samples than K) are dropped.
* Start: w_j = n_j / N, m_j the cluster mean, s2_jd = max(cluster variance, floor).

zoosel 0.1 started instead from the k-means++ points as means with the GLOBAL variance in
every component: from there EM reached an equal or higher likelihood but grew large
components that mixed classes (on 1,000 samples of 100 classes one held 107 samples),
and NLEEP through such components fell towards random (-0.76 where scikit-learn's fit on
the same projection gave -0.16 to -0.24). Started from k-means, every class is covered by
its own compact components, as in the reference.

EM, exactly:

* E-step: log p(z_i, j) = log w_j - 1/2 sum_d [log(2 pi s2_jd) + (z_id - m_jd)^2 / s2_jd];
  responsibilities r_ij = softmax_j; the log-likelihood is L = (1/N) sum_i logsumexp_j.
* M-step: n_j = sum_i r_ij, w_j = n_j / N, m_j = sum_i r_ij z_i / n_j,
  s2_jd = max(sum_i r_ij (z_id - m_jd)^2 / n_j, floor) with floor = 1e-6 times the mean
  global variance (scale-invariant; scikit-learn adds an absolute 1e-6). The floor is a
  constraint, not an added constant, so each M-step maximises the expected complete
  log-likelihood exactly and L never decreases.
* Stop when L improves by less than ``tol`` = 1e-3 (per sample, as scikit-learn) or after
  ``max_iter`` = 100 M-steps. The returned posteriors are those of a final E-step at the
  returned parameters.

Degenerate inputs. A class with one sample, duplicated samples (k-means++ then may pick
the same point twice; such components stay identical and share their responsibility),
N < D and D = 1 all give finite values. ScoringError when the features are constant.

Invariances: relabelling of classes, translation, rotation and scale of the features
(the principal axes, the distances and the relative variance floor all follow the
features; tested to 1e-6). NOT the order of the samples: the seeded k-means++ draws
sample positions, so a permutation starts EM from other means and the value moves by the
usual start-to-start variation of EM (as a different ``seed`` does).

Direction: higher is better (an average log-likelihood, <= 0); no sign flip.
Cost: one Gram and one full ``eigh`` of min(N, D)^2 for the principal axes, O(N K k) for
the seeding and per Lloyd iteration (one (N, k) x (k, K) product), then O(N K k) per EM
iteration (two matrix products of (N, 2k) and (2k, K)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zoosel.errors import ScoringError
from zoosel.hookspecs import hookimpl
from zoosel.scorers.inputs import as_float64
from zoosel.scorers.leep import leep
from zoosel.scorers.sfda import class_indices
from zoosel.threads import serial
from zoosel.threads import torch_threads as threads
from zoosel.types import Need, ScoreInputs, Scorer

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

__all__ = [
    "GaussianMixtureFit",
    "NLEEPFit",
    "fit_diagonal_mixture",
    "KMeansFit",
    "kmeans",
    "kmeans_plus_plus",
    "mixture_log_joint",
    "nleep",
    "nleep_fit",
    "principal_projection",
    "register_scorers",
]

COMPONENTS_PER_CLASS = 5
EXPLAINED_VARIANCE = 0.8
MAX_ITER = 100
TOL = 1e-3
VARIANCE_FLOOR = 1e-6  # relative to the mean global variance
KMEANS_MAX_ITER = 300
KMEANS_TOL = 1e-4  # summed squared centre shift, relative to the mean global variance
_RANK_RTOL = 1e-10


def principal_projection(xc: torch.Tensor, variance: float = EXPLAINED_VARIANCE) -> torch.Tensor:
    """Centred rows ``xc`` on their first k principal axes, k the smallest number whose
    cumulative explained variance exceeds ``variance`` (one exact ``eigh``)."""
    import torch

    n, d = xc.shape
    gram = xc @ xc.T if n <= d else xc.T @ xc
    with serial():
        evals, vecs = torch.linalg.eigh(gram)
    evals, vecs = evals.flip(0), vecs.flip(1)
    if not float(evals[0]) > 0:
        raise ScoringError("features are constant: NLEEP is undefined.")
    evals = torch.where(evals > _RANK_RTOL * evals[0], evals, 0.0)
    ratio = evals.cumsum(0) / evals.sum()
    k = min(int(torch.searchsorted(ratio, ratio.new_tensor([variance]), right=True)) + 1,
            int((evals > 0).sum()))
    if n <= d:
        return vecs[:, :k] * evals[:k].sqrt()
    return xc @ vecs[:, :k]


def kmeans_plus_plus(z: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``k`` rows of ``z`` chosen by k-means++ D^2 sampling (seeded).

    Squared distances come from |z|^2 - 2 z.c + |c|^2 (one matrix-vector product per
    step), clamped at 0; they only set sampling probabilities.
    """
    import torch

    n = z.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    draws = torch.rand(k, generator=gen, dtype=torch.float64).tolist()
    sq = (z * z).sum(dim=1)
    chosen = [min(int(draws[0] * n), n - 1)]
    dist = (sq - 2.0 * (z @ z[chosen[0]]) + sq[chosen[0]]).clamp_min_(0.0)
    for j in range(1, k):
        cum = dist.cumsum(0)
        total = float(cum[-1])
        if total > 0:
            target = cum.new_tensor([draws[j] * total])
            idx = min(int(torch.searchsorted(cum, target, right=True)), n - 1)
        else:  # every sample sits on a chosen mean
            idx = min(int(draws[j] * n), n - 1)
        chosen.append(idx)
        torch.minimum(dist, (sq - 2.0 * (z @ z[idx]) + sq[idx]).clamp_min_(0.0), out=dist)
    return torch.tensor(chosen, dtype=torch.int64, device=z.device)


@dataclass(frozen=True)
class KMeansFit:
    """Lloyd's k-means from a k-means++ start: ``labels`` (N,) and ``centres`` (K, d)."""

    labels: torch.Tensor
    centres: torch.Tensor
    iterations: int
    converged: bool


def _nearest(
    z: torch.Tensor, sq: torch.Tensor, centres: torch.Tensor, caller: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest centre for every row and its squared distance."""
    with threads(caller):
        cross = z @ centres.T
    dist = (sq[:, None] - 2.0 * cross + (centres * centres).sum(dim=1)[None, :]).clamp_min_(0.0)
    best, labels = dist.min(dim=1)
    return labels, best


def kmeans(
    z: torch.Tensor, k: int, seed: int = 0, *, max_iter: int = KMEANS_MAX_ITER,
    tol: float = KMEANS_TOL, product_threads: int | None = None,
) -> KMeansFit:
    """Lloyd's k-means on the rows of ``z`` from the seeded k-means++ centres (module
    docstring): stops when no label changes or the summed squared centre shift is below
    ``tol`` times the mean per-dimension variance."""
    import torch

    caller = product_threads or torch.get_num_threads()
    n, d = z.shape
    threshold = tol * float(z.var(dim=0, unbiased=False).mean())
    centres = z[kmeans_plus_plus(z, k, seed)].clone()
    sq = (z * z).sum(dim=1)
    labels, best = _nearest(z, sq, centres, caller)
    converged = False
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros(k, d, dtype=z.dtype, device=z.device).index_add_(0, labels, z)
        new = sums / counts.clamp_min(1)[:, None].to(z.dtype)
        empty = (counts == 0).nonzero().squeeze(1)
        if empty.numel():  # an emptied cluster takes the sample farthest from its centre
            far = best.topk(min(empty.numel(), n)).indices
            new[empty[: far.numel()]] = z[far]
        shift = float(((new - centres) ** 2).sum())
        centres = new
        previous = labels
        labels, best = _nearest(z, sq, centres, caller)
        if bool((labels == previous).all()) or shift <= threshold:
            converged = True
            break
    return KMeansFit(labels, centres, iterations, converged)


def mixture_log_joint(
    z: torch.Tensor,
    weights: torch.Tensor,
    means: torch.Tensor,
    variances: torch.Tensor,
    stacked: torch.Tensor | None = None,
    product_threads: int | None = None,
) -> torch.Tensor:
    """log w_j + log N(z_i; m_j, diag(s2_j)) for all i, j: shape (N, K).

    ``stacked`` may pass the precomputed [z, z^2] (N, 2d); ``product_threads`` the thread
    count for the (N, 2d) x (2d, K) product.
    """
    import torch

    precision = 1.0 / variances  # (K, d)
    if stacked is None:
        stacked = torch.cat([z, z * z], dim=1)
    coef = torch.cat([means * precision, -0.5 * precision], dim=1)  # (K, 2d)
    const = (
        weights.log()
        - 0.5 * (means * means * precision).sum(dim=1)
        - 0.5 * variances.log().sum(dim=1)
        - 0.5 * z.shape[1] * math.log(2 * math.pi)
    )
    with threads(product_threads or torch.get_num_threads()):
        product = stacked @ coef.T
    return product + const


@dataclass(frozen=True)
class GaussianMixtureFit:
    """A diagonal Gaussian mixture fitted by EM (float64).

    ``log_likelihood`` holds the mean log-likelihood per sample at every E-step (the
    last one at the returned parameters); ``posteriors`` (N, K) are from that E-step.
    """

    weights: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor
    posteriors: torch.Tensor
    log_likelihood: list[float]
    iterations: int
    converged: bool
    floor: float


def fit_diagonal_mixture(
    z: torch.Tensor, k: int, *, seed: int = 0, max_iter: int = MAX_ITER, tol: float = TOL
) -> GaussianMixtureFit:
    """EM for a ``k``-component diagonal Gaussian mixture on the rows of ``z`` (N, d)."""
    import torch

    caller = torch.get_num_threads()
    with serial():  # element-wise work on one thread, the two products on the caller's
        return _em(z, k, seed, max_iter, tol, caller)


def _em(
    z: torch.Tensor, k: int, seed: int, max_iter: int, tol: float, caller: int
) -> GaussianMixtureFit:
    import torch

    n, d = z.shape
    glob = z.var(dim=0, unbiased=False)
    scale = float(glob.mean())
    if not scale > 0:
        raise ScoringError("features are constant: the mixture is undefined.")
    floor = VARIANCE_FLOOR * scale
    stacked = torch.cat([z, z * z], dim=1)  # (N, 2d): [z, z^2]
    labels = kmeans(z, k, seed, product_threads=caller).labels
    counts = torch.bincount(labels, minlength=k)
    # one M-step from the hard assignments; clusters left empty are dropped
    resp = torch.nn.functional.one_hot(labels, k)[:, counts > 0].to(z.dtype)
    mass = resp.sum(dim=0)
    with threads(caller):
        sums = resp.T @ stacked
    means = sums[:, :d] / mass[:, None]
    variances = (sums[:, d:] / mass[:, None] - means * means).clamp_min(floor)
    weights = mass / n
    history: list[float] = []
    converged = False
    iterations = 0
    while True:
        log_joint = mixture_log_joint(z, weights, means, variances, stacked, caller)
        norm = torch.logsumexp(log_joint, dim=1, keepdim=True)
        history.append(float(norm.mean()))
        resp = torch.exp(log_joint - norm)
        if len(history) > 1 and history[-1] - history[-2] < tol:
            converged = True
            break
        if iterations >= max_iter:
            break
        iterations += 1
        mass = resp.sum(dim=0)  # n_j
        with threads(caller):
            sums = resp.T @ stacked  # (K, 2d): sum r z, sum r z^2
        live = mass > 0
        safe = torch.where(live, mass, 1.0)[:, None]
        new_means = sums[:, :d] / safe
        second = sums[:, d:] / safe
        new_vars = (second - new_means * new_means).clamp_min(floor)
        means = torch.where(live[:, None], new_means, means)
        variances = torch.where(live[:, None], new_vars, variances)
        weights = mass / n
    if not all(math.isfinite(v) for v in history):
        raise ScoringError("the mixture log-likelihood is not finite for these features.")
    return GaussianMixtureFit(weights, means, variances, resp, history, iterations,
                              converged, floor)


@dataclass(frozen=True)
class NLEEPFit:
    """NLEEP with the projected features ``z`` it was computed on and the mixture."""

    score: float
    z: torch.Tensor
    mixture: GaussianMixtureFit


def nleep_fit(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    *,
    components_per_class: int = COMPONENTS_PER_CLASS,
    variance: float = EXPLAINED_VARIANCE,
    seed: int = 0,
    max_iter: int = MAX_ITER,
    tol: float = TOL,
) -> NLEEPFit:
    """Fit NLEEP (module docstring) and return the score with the mixture it used.

    :param features: (N, D) float features, any dtype or device (computed in float64).
    :param labels: (N,) integer class labels.
    :param num_classes: optional upper bound used only to validate ``labels``.
    :param components_per_class: K = min(this x C, N) mixture components.
    :param variance: explained-variance fraction kept by the principal projection.
    :param seed: seeds the k-means++ initialisation.
    :raises ScoringError: on unusable input (see module docstring).
    """
    if components_per_class < 1:
        raise ScoringError("components_per_class must be at least 1.")
    if not 0 < variance <= 1:
        raise ScoringError("variance must lie in (0, 1].")
    f = as_float64(features, "features")
    n = f.shape[0]
    _, counts = class_indices(labels, n, num_classes)
    k = min(components_per_class * counts.numel(), n)
    z = principal_projection(f - f.mean(dim=0), variance)
    mixture = fit_diagonal_mixture(z, k, seed=seed, max_iter=max_iter, tol=tol)
    score = leep(mixture.posteriors, labels.to(f.device), num_classes)
    if not math.isfinite(score):
        raise ScoringError("NLEEP is not finite for these features.")
    return NLEEPFit(score, z, mixture)


def nleep(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    *,
    seed: int = 0,
) -> float:
    """NLEEP: LEEP of the labels through a Gaussian mixture's posteriors (higher is better)."""
    return nleep_fit(features, labels, num_classes, seed=seed).score


def _score(inputs: ScoreInputs) -> float:
    if inputs.features is None:
        raise ScoringError("NLEEP needs features.")
    return nleep(inputs.features, inputs.labels, inputs.num_classes)


@hookimpl
def register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register NLEEP."""
    register(
        Scorer(
            name="nleep",
            fn=_score,
            needs=frozenset({Need.FEATURES}),
            summary="LEEP through the posteriors of a Gaussian mixture (5 components per "
            "class) fitted to the principal components of the features.",
            reference="Li et al. 2021, CVPR, Ranking neural checkpoints (arXiv 2011.11200)",
            cost="one min(N, D)^3 eigh + O(N K k) per EM iteration, K = 5 C",
        )
    )
