"""Metrics of the model-selection benchmark (Deshpande et al. 2021, section 4 of docs/method.md).

Everything here works on plain dicts: ``accuracy`` maps model id -> fine-tuned test accuracy
in [0, 1], ``score`` maps model id -> score (higher = predicted better). The models of a
(task, regime) are the keys of ``accuracy``; scores of models without ground truth are
ignored.

Conventions (the pipeline and the report rely on them):

* Gains, the oracle gain, regret, spreads, noise and prediction errors are in accuracy
  points (x100). ``tol`` arguments are in accuracy units (0.01 = one point).
* Failed scores. A NaN, infinite or missing score ranks the model last: all such models
  form one tied group after every finite score. Correlations use only the models with a
  finite score (``n_finite`` says how many); fewer than 3 gives NaN. A scorer with no
  finite score at all gets NaN for every metric but the relative cost.
* Ties in score are broken at random and the *expected* value is reported, exactly:
  trials to best, top-k gain and top-1 regret are averages over all tie-breakings.
* Trials to best counts fine-tunings, 1-based: 1 when the top pick is a best model. A model
  whose accuracy is within ``tol`` of the best counts as best.
* Weighted tau is ``scipy.stats.weightedtau(accuracy, score)`` with scipy's defaults, as in
  the transferability-estimation literature: the hyperbolic weigher 1/(r+1) and
  ``rank=True``, i.e. the mean of the two weighted taus ranked by accuracy and by score,
  so an exchange among the top models of either ranking weighs most. It is symmetric in
  its two arguments.
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from math import comb
from typing import Any

import numpy as np
from scipy import stats

from zoosel.errors import UsageError

#: Per (task, regime, scorer) metrics, in table order.
METRICS: tuple[str, ...] = (
    "spearman",
    "kendall",
    "weighted_tau",
    "top1_gain",
    "top3_gain",
    "oracle_gain",
    "top1_regret",
    "trials_to_best",
    "relative_cost",
)

#: Direction of each metric (used by the report to say which way is better).
HIGHER_IS_BETTER: dict[str, bool] = {
    "spearman": True,
    "kendall": True,
    "weighted_tau": True,
    "top1_gain": True,
    "top3_gain": True,
    "oracle_gain": True,
    "top1_regret": False,
    "trials_to_best": False,
    "relative_cost": False,
}

_NAN = float("nan")


# --------------------------------------------------------------------------- input checks


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _check_accuracy(accuracy: Mapping[str, float]) -> dict[str, float]:
    if not accuracy:
        raise UsageError("accuracy is empty: no fine-tuned model to compare scores with.")
    out: dict[str, float] = {}
    for model, acc in accuracy.items():
        if not _finite(acc) or not 0.0 <= float(acc) <= 1.0:
            raise UsageError(f"accuracy of {model!r} is {acc!r}; expected a number in [0, 1].")
        out[str(model)] = float(acc)
    return out


def _clean_score(score: Mapping[str, float], models: Iterable[str]) -> dict[str, float]:
    """Score of each model, NaN where missing or non-finite."""
    return {m: float(score[m]) if m in score and _finite(score[m]) else _NAN for m in models}


def _score_groups(accuracy: Mapping[str, float], score: Mapping[str, float]) -> list[list[str]]:
    """Models in score order (best first), as groups of tied scores; failed scores last."""
    s = _clean_score(score, accuracy)
    finite = sorted((m for m in s if not math.isnan(s[m])), key=lambda m: (-s[m], m))
    groups: list[list[str]] = []
    for m in finite:
        if groups and s[groups[-1][0]] == s[m]:
            groups[-1].append(m)
        else:
            groups.append([m])
    failed = sorted(m for m in s if math.isnan(s[m]))
    if failed:
        groups.append(failed)
    return groups


# --------------------------------------------------------------------------- ranking metrics


def expected_trials_to_best(
    accuracy: Mapping[str, float], score: Mapping[str, float], tol: float = 0.0
) -> float:
    """Expected number of fine-tunings, in score order, until a best model is reached.

    Within a tied group of ``g`` models holding ``b`` best ones, the first best one is at
    expected position ``(g + 1) / (b + 1)`` under a uniformly random order.
    """
    acc = _check_accuracy(accuracy)
    top = max(acc.values())
    before = 0
    for group in _score_groups(acc, score):
        b = sum(acc[m] >= top - tol for m in group)
        if b:
            return before + (len(group) + 1) / (b + 1)
        before += len(group)
    raise AssertionError("unreachable: the best model is in some group")


def expected_best_of_top_k(
    accuracy: Mapping[str, float], score: Mapping[str, float], k: int
) -> float:
    """Expected best accuracy among the ``k`` top-scored models (random tie-breaking)."""
    if k < 1:
        raise UsageError(f"k must be >= 1, got {k}.")
    acc = _check_accuracy(accuracy)
    fixed = -math.inf
    left = k
    for group in _score_groups(acc, score):
        if left <= 0:
            break
        accs = sorted((acc[m] for m in group), reverse=True)
        g = len(accs)
        if g <= left:
            fixed = max(fixed, accs[0])
            left -= g
            continue
        # ``left`` of the ``g`` tied models are picked at random: the j-th best of the
        # group (1-based) is the best pick with probability C(g - j, left - 1) / C(g, left).
        total = comb(g, left)
        expect = sum(
            comb(g - j, left - 1) / total * max(fixed, a) for j, a in enumerate(accs, start=1)
        )
        return expect
    return fixed


def correlations(accuracy: Mapping[str, float], score: Mapping[str, float]) -> dict[str, float]:
    """Spearman, Kendall tau-b and weighted tau over the models with a finite score.

    Returns ``spearman``, ``kendall``, ``weighted_tau`` (NaN with fewer than 3 models or a
    constant input) and ``n_finite``.
    """
    acc = _check_accuracy(accuracy)
    s = _clean_score(score, acc)
    used = sorted(m for m in acc if not math.isnan(s[m]))
    out = {"spearman": _NAN, "kendall": _NAN, "weighted_tau": _NAN, "n_finite": len(used)}
    if len(used) < 3:
        return out
    a = np.array([acc[m] for m in used])
    x = np.array([s[m] for m in used])
    if np.ptp(a) == 0 or np.ptp(x) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["spearman"] = float(stats.spearmanr(a, x).statistic)
        out["kendall"] = float(stats.kendalltau(a, x).statistic)
        out["weighted_tau"] = float(stats.weightedtau(a, x).statistic)
    return out


def scorer_metrics(
    accuracy: Mapping[str, float],
    score: Mapping[str, float],
    generalist: str | None,
    *,
    cost: float | None = None,
    finetune_seconds: float | None = None,
    tol: float = 0.0,
) -> dict[str, float]:
    """All of :data:`METRICS` for one scorer on one (task, regime), plus ``n_models``, ``n_finite``.

    ``cost`` is the scorer's seconds for the whole zoo, ``finetune_seconds`` the mean wall
    time of one fine-tuning; either missing gives a NaN relative cost. Without a generalist
    (None or "") the gains are NaN; a generalist without an accuracy is an error.
    """
    acc = _check_accuracy(accuracy)
    if generalist and generalist not in acc:
        raise UsageError(f"generalist {generalist!r} has no fine-tuned accuracy.")
    base = acc[generalist] if generalist else _NAN
    top = max(acc.values())
    out: dict[str, float] = dict.fromkeys(METRICS, _NAN)
    out.update(correlations(acc, score))
    out["n_models"] = len(acc)
    out["oracle_gain"] = 100.0 * (top - base)
    if out["n_finite"] > 0:
        out["top1_gain"] = 100.0 * (expected_best_of_top_k(acc, score, 1) - base)
        out["top3_gain"] = 100.0 * (expected_best_of_top_k(acc, score, 3) - base)
        out["top1_regret"] = 100.0 * (top - expected_best_of_top_k(acc, score, 1))
        out["trials_to_best"] = expected_trials_to_best(acc, score, tol)
    out["relative_cost"] = relative_cost(cost, finetune_seconds)
    return out


def relative_cost(cost: float | None, finetune_seconds: float | None) -> float:
    """Cost of scoring the zoo in units of one fine-tuning run (NaN when unknown)."""
    if cost is None or finetune_seconds is None:
        return _NAN
    if not _finite(cost) or not _finite(finetune_seconds):
        return _NAN
    if float(cost) < 0 or float(finetune_seconds) <= 0:
        raise UsageError(
            f"cost {cost!r} must be >= 0 and finetune_seconds {finetune_seconds!r} > 0."
        )
    return float(cost) / float(finetune_seconds)


def task_metrics(
    accuracy: Mapping[str, float],
    scores: Mapping[str, Mapping[str, float]],
    generalist: str | None,
    *,
    cost: Mapping[str, float] | None = None,
    finetune_seconds: float | None = None,
    tol: float = 0.0,
) -> dict[str, dict[str, float]]:
    """:func:`scorer_metrics` for every scorer of one (task, regime), keyed by scorer name."""
    cost = cost or {}
    return {
        name: scorer_metrics(
            accuracy,
            scores[name],
            generalist,
            cost=cost.get(name),
            finetune_seconds=finetune_seconds,
            tol=tol,
        )
        for name in sorted(scores)
    }


def prediction_error(
    predicted: Mapping[str, float], accuracy: Mapping[str, float]
) -> dict[str, float]:
    """How well predicted fine-tuned accuracies (linft) match the real ones.

    Over the models with both a finite prediction and an accuracy: ``mae`` (mean absolute
    error, points), ``bias`` (mean predicted - real, points), ``pearson`` and ``spearman``
    (NaN with fewer than 3 models), ``n``.
    """
    acc = _check_accuracy(accuracy)
    used = sorted(m for m in acc if m in predicted and _finite(predicted[m]))
    out = {"mae": _NAN, "bias": _NAN, "pearson": _NAN, "spearman": _NAN, "n": len(used)}
    if not used:
        return out
    p = np.array([float(predicted[m]) for m in used])
    a = np.array([acc[m] for m in used])
    out["mae"] = float(100.0 * np.mean(np.abs(p - a)))
    out["bias"] = float(100.0 * np.mean(p - a))
    if len(used) >= 3 and np.ptp(p) > 0 and np.ptp(a) > 0:
        out["pearson"] = float(np.corrcoef(p, a)[0, 1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["spearman"] = float(stats.spearmanr(p, a).statistic)
    return out


# --------------------------------------------------------------------------- aggregation


def bootstrap_ci(
    values: Iterable[float], *, n_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Mean of the finite values and a percentile bootstrap interval over them.

    Resamples the values (tasks) with replacement ``n_resamples`` times with a generator
    seeded by ``seed``. Returns ``mean``, ``ci_low``, ``ci_high``, ``n_tasks`` (finite values
    used) and ``n_total``. No finite value: NaN; a single one: a zero-width interval.
    """
    vals = [float(v) for v in values]
    x = np.array([v for v in vals if math.isfinite(v)], dtype=float)
    out = {"mean": _NAN, "ci_low": _NAN, "ci_high": _NAN, "n_tasks": len(x), "n_total": len(vals)}
    if len(x) == 0:
        return out
    out["mean"] = float(x.mean())
    if len(x) == 1:
        out["ci_low"] = out["ci_high"] = out["mean"]
        return out
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    # Guard against rounding pushing the mean just outside a degenerate interval.
    out["ci_low"] = float(min(lo, out["mean"]))
    out["ci_high"] = float(max(hi, out["mean"]))
    return out


def aggregate(
    per_task: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    *,
    metrics: Sequence[str] = METRICS,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Mean and bootstrap CI over tasks of each metric, per regime and scorer.

    ``per_task[task][regime][scorer][metric]`` -> ``out[regime][scorer][metric]`` with the
    keys of :func:`bootstrap_ci`. Tasks where the metric is NaN (or the scorer or regime is
    absent) are left out and counted in ``n_total - n_tasks``.
    """
    regimes = sorted({r for t in per_task.values() for r in t}, key=regime_sort_key)
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for regime in regimes:
        tasks = [t for t in sorted(per_task) if regime in per_task[t]]
        scorers = sorted({s for t in tasks for s in per_task[t][regime]})
        out[regime] = {}
        for scorer in scorers:
            out[regime][scorer] = {}
            for metric in metrics:
                vals = [per_task[t][regime].get(scorer, {}).get(metric, _NAN) for t in tasks]
                vals = [_NAN if v is None else v for v in vals]
                out[regime][scorer][metric] = bootstrap_ci(
                    vals, n_resamples=n_resamples, seed=seed, level=level
                )
    return out


def family_spearman(
    tasks: Mapping[str, Mapping[str, Mapping[str, Any]]],
    zoo: Sequence[Mapping[str, Any]],
    *,
    min_members: int = 4,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Spearman between each score and fine-tuned accuracy within one architecture.

    A zoo mixing architectures rewards a score for telling the families apart; this
    measures it among the members of each architecture with at least ``min_members``
    members, as ``out[arch][regime][scorer]`` (mean and bootstrap CI over tasks, as
    :func:`aggregate`). Empty when the zoo has a single architecture.
    """
    families: dict[str, set[str]] = {}
    for member in zoo:
        families.setdefault(str(member.get("arch", "?")), set()).add(str(member.get("id")))
    families = {a: m for a, m in families.items() if len(m) >= min_members}
    if len(families) < 2:
        return {}
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for arch, names in sorted(families.items()):
        per_task: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
        for task, regimes in tasks.items():
            for regime, entry in regimes.items():
                acc = {m: a for m, a in entry["accuracy"].items() if m in names}
                per_task.setdefault(task, {})[regime] = {
                    scorer: {"spearman": correlations(acc, {m: v for m, v in score.items()
                                                            if m in acc})["spearman"]}
                    for scorer, score in (entry.get("scores") or {}).items()
                }
        out[arch] = aggregate(per_task, metrics=("spearman",), n_resamples=n_resamples,
                              seed=seed, level=level)
    return out


def margins(
    per_task: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    reference: str,
    *,
    metrics: Sequence[str] = METRICS,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Each scorer's margin over ``reference``, paired by task, with a bootstrap CI.

    The margin is oriented so that positive is better than the reference: ``scorer -
    reference`` for metrics where higher is better, ``reference - scorer`` otherwise.
    Returns ``out[regime][scorer][metric]`` with the keys of :func:`bootstrap_ci` (the
    resamples are over tasks, as in :func:`aggregate`); regimes without the reference
    are left out, and so is the reference itself.
    """
    diffs: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for task, regimes in per_task.items():
        for regime, scorers in regimes.items():
            ref = scorers.get(reference)
            if ref is None:
                continue
            for scorer, cells in scorers.items():
                if scorer == reference:
                    continue
                sign = {m: 1.0 if HIGHER_IS_BETTER.get(m, True) else -1.0 for m in metrics}
                diffs.setdefault(task, {}).setdefault(regime, {})[scorer] = {
                    m: sign[m] * (_num(cells.get(m)) - _num(ref.get(m))) for m in metrics}
    return aggregate(diffs, metrics=metrics, n_resamples=n_resamples, seed=seed, level=level)


def _num(x: Any) -> float:
    return float(x) if _finite(x) else _NAN


def check_static_beaten(
    margin: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    aggregates: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    selectors: Iterable[str],
    *,
    metrics: Sequence[str] = ("trials_to_best", "top1_regret"),
    leaders: int = 3,
) -> dict[str, Any]:
    """Validity (5): the leading selectors are clearly better than the dataset-blind
    ranking, so that the benchmark tells reading the target data from knowing the zoo.

    In every few-shot regime of ``margin`` (see :func:`margins`, against the blind
    ranking) and for each of ``metrics``, the ``leaders`` selectors of ``selectors`` with
    the best mean are listed; the regime and metric pass when the best of them beats the
    blind ranking with a 95% interval of the margin above 0. ``passed`` is None when no
    few-shot regime has margins.
    """
    chosen = set(selectors)
    per_target: dict[str, dict[str, Any]] = {}
    for regime in sorted(margin, key=regime_sort_key):
        if not is_few_shot(regime):
            continue
        for metric in metrics:
            sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
            means = {s: _num(aggregates.get(regime, {}).get(s, {}).get(metric, {}).get("mean"))
                     for s in margin[regime] if s in chosen}
            ranked = sorted((s for s in means if math.isfinite(means[s])),
                            key=lambda s: (-sign * means[s], s))[:leaders]
            if not ranked:
                continue
            cells = {s: margin[regime][s][metric] for s in ranked}
            best = cells[ranked[0]]
            per_target[f"{regime}/{metric}"] = {
                "leaders": ranked,
                "margins": {s: dict(c) for s, c in cells.items()},
                "passed": _num(best.get("ci_low")) > 0,
            }
    n_pass = sum(bool(v["passed"]) for v in per_target.values())
    return {
        "passed": (n_pass == len(per_target)) if per_target else None,
        "rule": "in every few-shot regime the leading selector beats the dataset-blind "
                f"ranking on {' and '.join(metrics)} with a 95% interval above 0",
        "n_targets": len(per_target),
        "n_pass": n_pass,
        "per_target": per_target,
    }


def default_verdict(
    per_task: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    candidate: str,
    comparators: Iterable[str],
    *,
    regimes: Sequence[str] = ("5-shot", "20-shot"),
    metrics: Sequence[str] = ("top1_regret", "trials_to_best"),
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Does ``candidate`` beat every one of ``comparators`` on ``metrics`` in ``regimes``?

    ``out["margins"][regime][metric][comparator]`` is the candidate's margin (positive:
    the candidate is better), paired by task, with a bootstrap CI (:func:`bootstrap_ci`).
    ``beats_all`` holds when every mean margin is above 0, ``beats_all_clearly`` when
    every interval is; ``not_beaten`` lists ``regime/metric/comparator`` where the mean
    margin is not above 0. Regimes without the candidate are left out.
    """
    names = sorted(set(comparators) - {candidate})
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for regime in regimes:
        tasks = [t for t in sorted(per_task) if candidate in per_task[t].get(regime, {})]
        if not tasks:
            continue
        for metric in metrics:
            sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
            for other in names:
                diffs = [sign * (_num(per_task[t][regime][candidate].get(metric))
                                 - _num(per_task[t][regime].get(other, {}).get(metric)))
                         for t in tasks]
                out.setdefault(regime, {}).setdefault(metric, {})[other] = bootstrap_ci(
                    diffs, n_resamples=n_resamples, seed=seed, level=level)
    cells = [(f"{r}/{m}/{o}", c) for r, per in out.items() for m, row in per.items()
             for o, c in row.items()]
    return {
        "candidate": candidate,
        "regimes": list(out),
        "metrics": list(metrics),
        "margins": out,
        "beats_all": bool(cells) and all(_num(c["mean"]) > 0 for _, c in cells),
        "beats_all_clearly": bool(cells) and all(_num(c["ci_low"]) > 0 for _, c in cells),
        "not_beaten": [k for k, c in cells if not _num(c["mean"]) > 0],
    }


def regime_sort_key(regime: str) -> tuple[int, int, str]:
    """Order regimes as 1-shot < 5-shot < 20-shot < full < anything else (by name)."""
    m = re.fullmatch(r"(\d+)-shot", regime)
    if m:
        return (0, int(m.group(1)), regime)
    if regime == "full":
        return (1, 0, regime)
    return (2, 0, regime)


def is_few_shot(regime: str) -> bool:
    """True for regimes named ``<k>-shot``."""
    return re.fullmatch(r"\d+-shot", regime) is not None


# --------------------------------------------------------------------------- validity


def _argmax(acc: Mapping[str, float]) -> str:
    # Ties go to the smallest model id so that the result is deterministic.
    return min(acc, key=lambda m: (-acc[m], m))


def check_best_differs(targets: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Validity (1): the best zoo member is not the same on every target.

    ``targets`` maps a target name (e.g. ``"pets/5-shot"``) to its accuracies. Passes when
    at least two distinct models are best (ties in accuracy go to the smallest id).
    """
    best = {t: _argmax(_check_accuracy(targets[t])) for t in sorted(targets)}
    counts: dict[str, int] = {}
    for m in best.values():
        counts[m] = counts.get(m, 0) + 1
    n_distinct = len(counts)
    return {
        "passed": n_distinct >= 2,
        "rule": "at least 2 distinct best models across targets",
        "n_targets": len(best),
        "n_distinct_best": n_distinct,
        "best_counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "per_target": best,
    }


def check_spread(
    targets: Mapping[str, Mapping[str, float]],
    *,
    min_points: float = 10.0,
    min_fraction: float = 0.5,
) -> dict[str, Any]:
    """Validity (2): best - worst accuracy is at least ``min_points`` on most targets.

    Pass callers the few-shot targets. Passes when the fraction of targets with a spread
    >= ``min_points`` is strictly greater than ``min_fraction`` ("most").
    """
    spread = {
        t: 100.0 * (max(a.values()) - min(a.values()))
        for t, a in ((t, _check_accuracy(targets[t])) for t in sorted(targets))
    }
    # The epsilon keeps 0.6 - 0.5 (= 9.999... points) on the right side of 10.
    wide = sum(v >= min_points - 1e-9 for v in spread.values())
    frac = wide / len(spread) if spread else _NAN
    return {
        "passed": bool(spread) and frac > min_fraction,
        "rule": f"spread >= {min_points:g} points on more than {min_fraction:.0%} of targets",
        "n_targets": len(spread),
        "n_wide": wide,
        "fraction_wide": frac,
        "per_target": spread,
    }


def check_generalist_not_always_best(
    targets: Mapping[str, Mapping[str, float]], generalist: str | None, tol: float = 0.0
) -> dict[str, Any]:
    """Validity (3): on some target a zoo member beats the generalist by more than ``tol``.

    ``passed`` is None without a generalist (None or "").
    """
    per_target: dict[str, bool] = {}
    if not generalist:
        return {
            "passed": None,
            "rule": "the generalist is not the best model on every target (no generalist)",
            "n_targets": 0,
            "n_generalist_best": 0,
            "fraction_generalist_best": _NAN,
            "per_target": per_target,
        }
    for t in sorted(targets):
        acc = _check_accuracy(targets[t])
        if generalist not in acc:
            raise UsageError(f"generalist {generalist!r} has no accuracy on target {t!r}.")
        per_target[t] = acc[generalist] >= max(acc.values()) - tol
    n_best = sum(per_target.values())
    return {
        "passed": n_best < len(per_target),
        "rule": "the generalist is not the best model on every target",
        "n_targets": len(per_target),
        "n_generalist_best": n_best,
        "fraction_generalist_best": n_best / len(per_target) if per_target else _NAN,
        "per_target": per_target,
    }


def check_noise(
    targets: Mapping[str, Mapping[str, float]],
    seed_accuracies: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    max_ratio: float = 0.5,
) -> dict[str, Any]:
    """Validity (4): seed-to-seed noise of the ground truth is small next to model gaps.

    Per target: ``noise_std`` is the mean over models with >= 2 seeds of their sample std
    (ddof=1), ``model_std`` the std (ddof=1) of the models' accuracies, ``mean_gap`` the
    mean gap between consecutive models in the accuracy ranking (= spread / (n - 1)),
    ``spread`` best - worst; all in points. A target passes when
    ``noise_std < max_ratio * model_std``: with the default 0.5, at least 3/4 of the
    variance between models' accuracies is real (``reliability`` = 1 - noise^2 /
    model_std^2), so the ranking the selectors are judged on is mostly signal. The ratio to
    the consecutive gap is reported too: with a large zoo it is above 1 (close neighbours in
    the ranking are not told apart by one seed), which is why the rule uses the spread of
    the whole zoo. The check passes when more than half of the targets with seed data pass;
    ``passed`` is None without seed data.
    """
    per_target: dict[str, dict[str, float]] = {}
    for t in sorted(targets):
        acc = _check_accuracy(targets[t])
        seeds = seed_accuracies.get(t) or {}
        stds = []
        for m in sorted(seeds):
            vals = [float(v) for v in seeds[m] if _finite(v)]
            if len(vals) >= 2:
                stds.append(float(np.std(vals, ddof=1)))
        if not stds or len(acc) < 2:
            continue
        spread = 100.0 * (max(acc.values()) - min(acc.values()))
        gap = spread / (len(acc) - 1)
        model_std = 100.0 * float(np.std(list(acc.values()), ddof=1))
        noise = 100.0 * float(np.mean(stds))
        per_target[t] = {
            "noise_std": noise,
            "n_models_with_seeds": len(stds),
            "model_std": model_std,
            "mean_gap": gap,
            "spread": spread,
            "noise_over_model_std": noise / model_std if model_std > 0 else math.inf,
            "reliability": 1.0 - (noise / model_std) ** 2 if model_std > 0 else -math.inf,
            "noise_over_gap": noise / gap if gap > 0 else math.inf,
            "noise_over_spread": noise / spread if spread > 0 else math.inf,
            "passed": noise < max_ratio * model_std,
        }
    n_pass = sum(bool(v["passed"]) for v in per_target.values())
    ratios = [v["noise_over_gap"] for v in per_target.values()]
    return {
        "passed": (n_pass > len(per_target) / 2) if per_target else None,
        "rule": f"noise std < {max_ratio:g} x std of the models' accuracies on more than half "
                "the targets",
        "median_noise_over_model_std": float(np.median(
            [v["noise_over_model_std"] for v in per_target.values()])) if per_target else _NAN,
        "n_targets": len(per_target),
        "n_pass": n_pass,
        "median_noise_over_gap": float(np.median(ratios)) if ratios else _NAN,
        "mean_noise_std": float(np.mean([v["noise_std"] for v in per_target.values()]))
        if per_target
        else _NAN,
        "per_target": per_target,
    }


def validity_checks(
    tasks: Mapping[str, Mapping[str, Mapping[str, Any]]],
    generalist: str | None,
    *,
    tol: float = 0.0,
    min_spread_points: float = 10.0,
    max_noise_ratio: float = 0.5,
) -> dict[str, Any]:
    """Run the four validity checks on ``tasks[task][regime]`` ground truth.

    Each (task, regime) is a target named ``"task/regime"``; the spread check uses only the
    ``<k>-shot`` targets. Returns ``{"passed": all checks that could run passed,
    "checks": {name: result}}``.
    """
    targets: dict[str, Mapping[str, float]] = {}
    seeds: dict[str, Mapping[str, Sequence[float]]] = {}
    few: dict[str, Mapping[str, float]] = {}
    for task in sorted(tasks):
        for regime in sorted(tasks[task], key=regime_sort_key):
            entry = tasks[task][regime]
            name = f"{task}/{regime}"
            targets[name] = entry["accuracy"]
            seeds[name] = entry.get("seed_accuracies") or {}
            if is_few_shot(regime):
                few[name] = entry["accuracy"]
    checks = {
        "best_differs": check_best_differs(targets),
        "spread": check_spread(few, min_points=min_spread_points),
        "generalist_not_always_best": check_generalist_not_always_best(targets, generalist, tol),
        "noise": check_noise(targets, seeds, max_ratio=max_noise_ratio),
    }
    ran = [c["passed"] for c in checks.values() if c["passed"] is not None]
    return {"passed": all(ran), "checks": checks}


# --------------------------------------------------------------------------- whole benchmark


def evaluate_benchmark(
    results: Mapping[str, Any],
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    tol: float = 0.0,
) -> dict[str, Any]:
    """Fill in every derived number of a results dict (see :mod:`zoosel.bench.report`).

    Reads ``generalist`` and ``tasks[task][regime]`` (``accuracy``, ``scores`` and the
    optional ``seed_accuracies``, ``cost``, ``finetune_seconds``, ``predicted``) and returns
    a deep copy with ``tasks[task][regime]["metrics"]`` (and ``["prediction"]``), then
    ``aggregates``, ``prediction_aggregates``, ``validity`` and ``settings`` added.
    """
    if not isinstance(results, Mapping) or "tasks" not in results:
        raise UsageError("results need 'tasks' (and 'generalist' for the gains).")
    from zoosel.bench import baselines, combination
    from zoosel.bench.results_file import check_versions

    out = copy.deepcopy(dict(results))
    generalist = out.get("generalist") or None
    tasks = out["tasks"]
    for name in out.pop("derived_scores", None) or ():  # rows of an earlier evaluation
        for regimes in tasks.values():
            for entry in regimes.values():
                (entry.get("scores") or {}).pop(name, None)
                (entry.get("cost") or {}).pop(name, None)
    stale = set(check_versions(out).stale)
    if combination.FITTED in stale:  # an earlier default's column: use the current one's
        stale.discard(combination.FITTED)
        for regimes in tasks.values():
            for entry in regimes.values():
                (entry.get("scores") or {}).pop(combination.FITTED, None)
                (entry.get("cost") or {}).pop(combination.FITTED, None)
        out["replaced_stale"] = [combination.FITTED]
    blind = baselines.add_blind_rows(out)
    fit = combination.add_combination_rows(out, tol=tol)
    out["combination"] = fit
    out["derived_scores"] = [*blind, *fit.get("rows", [])]
    per_task: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    per_pred: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for task in sorted(tasks):
        for regime in sorted(tasks[task], key=regime_sort_key):
            entry = tasks[task][regime]
            if "accuracy" not in entry:
                raise UsageError(f"tasks[{task!r}][{regime!r}] has no 'accuracy'.")
            entry["metrics"] = task_metrics(
                entry["accuracy"],
                entry.get("scores") or {},
                generalist,
                cost=entry.get("cost"),
                finetune_seconds=entry.get("finetune_seconds"),
                tol=tol,
            )
            per_task.setdefault(task, {})[regime] = entry["metrics"]
            predicted = entry.get("predicted") or {}
            if predicted:
                entry["prediction"] = {
                    s: prediction_error(predicted[s], entry["accuracy"]) for s in sorted(predicted)
                }
                per_pred.setdefault(task, {})[regime] = entry["prediction"]
    kw = {"n_resamples": n_resamples, "seed": seed, "level": level}
    out["aggregates"] = aggregate(per_task, **kw)
    out["prediction_aggregates"] = aggregate(
        per_pred, metrics=("mae", "bias", "pearson", "spearman"), **kw
    )
    # Ablation regimes re-score a regime that is already there: same ground truth, so they
    # would count its targets twice in the checks of the benchmark itself.
    ablations = set(results.get("ablations") or ())
    checked = {t: {r: e for r, e in regimes.items() if r not in ablations}
               for t, regimes in tasks.items()}
    out["family_aggregates"] = family_spearman(tasks, out.get("zoo") or [], **kw)
    out["validity"] = validity_checks(checked, generalist, tol=tol)
    out["margins"] = margins(per_task, baselines.STATIC, **kw)
    # a stale score's values are another computation's: no check or verdict rests on them
    measured = sorted({s for per in out["aggregates"].values() for s in per}
                      - set(out["derived_scores"]) - stale)
    static = check_static_beaten(out["margins"], out["aggregates"], measured)
    if static["passed"] is not None:
        out["validity"]["checks"]["static_baseline_beaten"] = static
        out["validity"]["passed"] = bool(out["validity"]["passed"] and static["passed"])
    if fit:
        fit["verdict"] = default_verdict(
            per_task, combination.LOTO, [*measured, baselines.STATIC], **kw)
    out["settings"] = {"n_resamples": n_resamples, "seed": seed, "level": level, "tol": tol}
    return out
