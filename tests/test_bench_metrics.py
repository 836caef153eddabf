"""Benchmark metrics checked against hand-worked values and brute-force references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from zoosel.bench import metrics as M
from zoosel.errors import UsageError, ZooselError

# Four models; accuracy ranks A>B>C>D, score ranks B>A>D>C.
ACC4 = {"A": 0.9, "B": 0.8, "C": 0.7, "D": 0.6}
SCORE4 = {"A": 3.0, "B": 4.0, "C": 1.0, "D": 2.0}


# --------------------------------------------------------------------------- brute force


def _orderings(acc, score):
    """Every order of the models consistent with the score (ties and failures permuted)."""

    def key(m):
        v = score.get(m, math.nan)
        return -math.inf if not math.isfinite(v) else v

    out = []
    for perm in itertools.permutations(sorted(acc)):
        if all(key(perm[i]) >= key(perm[i + 1]) for i in range(len(perm) - 1)):
            out.append(perm)
    return out


def _brute_trials(acc, score, tol=0.0):
    top = max(acc.values())
    vals = [
        next(i + 1 for i, m in enumerate(p) if acc[m] >= top - tol) for p in _orderings(acc, score)
    ]
    return float(np.mean(vals))


def _brute_best_of_top_k(acc, score, k):
    return float(np.mean([max(acc[m] for m in p[:k]) for p in _orderings(acc, score)]))


def _brute_weighted_tau(x, y):
    """Vigna's weighted tau, hyperbolic additive weights, averaged over both rankings."""
    n = len(x)

    def one(primary):
        order = sorted(range(n), key=lambda i: -primary[i])
        rank = {i: r for r, i in enumerate(order)}
        num = den = 0.0
        for i, j in itertools.combinations(range(n), 2):
            w = 1.0 / (rank[i] + 1) + 1.0 / (rank[j] + 1)
            num += w * np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
            den += w
        return num / den

    return (one(x) + one(y)) / 2


# --------------------------------------------------------------------------- correlations


def test_spearman_kendall_by_hand():
    # Rank differences are all 1: rho = 1 - 6*4/(4*(16-1)) = 0.6.
    # Discordant pairs (A,B) and (C,D) out of 6: tau = (4-2)/6 = 1/3.
    c = M.correlations(ACC4, SCORE4)
    assert c["spearman"] == pytest.approx(0.6)
    assert c["kendall"] == pytest.approx(1 / 3)
    assert c["n_finite"] == 4


def test_kendall_tau_b_with_ties_by_hand():
    acc = {"A": 0.9, "B": 0.8, "C": 0.7, "D": 0.6}
    score = {"A": 2.0, "B": 2.0, "C": 1.0, "D": 0.0}
    # 5 concordant, 0 discordant, 1 pair tied in score only:
    # tau_b = 5 / sqrt((6 - 0) * (6 - 1)).
    assert M.correlations(acc, score)["kendall"] == pytest.approx(5 / math.sqrt(30))


def test_weighted_tau_matches_brute_force():
    rng = np.random.default_rng(7)
    for n in (4, 6, 9):
        for _ in range(5):
            a = rng.permutation(n) / 10 + 0.05
            s = rng.normal(size=n)
            acc = {f"m{i}": float(a[i]) for i in range(n)}
            score = {f"m{i}": float(s[i]) for i in range(n)}
            got = M.correlations(acc, score)["weighted_tau"]
            assert got == pytest.approx(_brute_weighted_tau(list(a), list(s)), abs=1e-12)


def test_weighted_tau_weighs_the_top():
    # Swapping the two best models hurts more than swapping the two worst.
    acc = {f"m{i}": 0.9 - 0.1 * i for i in range(6)}
    top_swap = {f"m{i}": float(-i) for i in range(6)} | {"m0": -1.0, "m1": 0.0}
    bottom_swap = {f"m{i}": float(-i) for i in range(6)} | {"m4": -5.0, "m5": -4.0}
    wt_top = M.correlations(acc, top_swap)["weighted_tau"]
    wt_bottom = M.correlations(acc, bottom_swap)["weighted_tau"]
    assert wt_top < wt_bottom < 1.0
    assert M.correlations(acc, top_swap)["kendall"] == pytest.approx(
        M.correlations(acc, bottom_swap)["kendall"]
    )


def test_correlations_use_only_finite_scores():
    acc = {"A": 0.9, "B": 0.8, "C": 0.7, "D": 0.6, "E": 0.5}
    score = {"A": 5.0, "B": float("nan"), "C": 3.0, "D": 2.0}  # E missing
    c = M.correlations(acc, score)
    assert c["n_finite"] == 3
    assert c["spearman"] == pytest.approx(1.0)
    few = M.correlations(acc, {"A": 1.0, "B": 0.0})
    assert few["n_finite"] == 2 and math.isnan(few["spearman"]) and math.isnan(few["kendall"])
    const = M.correlations(acc, dict.fromkeys(acc, 1.0))
    assert math.isnan(const["spearman"]) and math.isnan(const["weighted_tau"])


# --------------------------------------------------------------------------- top-k and trials


def test_gain_regret_trials_by_hand():
    acc = {"A": 0.70, "B": 0.80, "C": 0.75, "D": 0.60, "E": 0.85}
    score = {"D": 5.0, "C": 4.0, "A": 3.0, "E": 2.0, "B": 1.0}
    m = M.scorer_metrics(acc, score, "A", cost=30.0, finetune_seconds=10.0)
    assert m["top1_gain"] == pytest.approx(-10.0)  # picks D: 60 - 70
    assert m["top3_gain"] == pytest.approx(5.0)  # best of D, C, A is C: 75 - 70
    assert m["oracle_gain"] == pytest.approx(15.0)  # E: 85 - 70
    assert m["top1_regret"] == pytest.approx(25.0)  # 85 - 60
    assert m["trials_to_best"] == 4.0  # D, C, A, E
    assert m["relative_cost"] == pytest.approx(3.0)
    assert m["n_models"] == 5 and m["n_finite"] == 5


def test_trials_with_score_ties_by_hand():
    # Order: {m1} then the tie {m4, m5, m2} holding the single best m2, then m3.
    # m2 is 1st, 2nd or 3rd of the tie with probability 1/3 each: 1 + (1+2+3)/3 = 3.
    acc = {"m1": 0.5, "m2": 0.9, "m3": 0.8, "m4": 0.6, "m5": 0.7}
    score = {"m1": 3.0, "m2": 2.0, "m3": 1.0, "m4": 2.0, "m5": 2.0}
    assert M.expected_trials_to_best(acc, score) == pytest.approx(3.0)
    assert _brute_trials(acc, score) == pytest.approx(3.0)
    # Best of the top 2: m1 plus one of the tie, expected (0.9 + 0.7 + 0.6) / 3.
    assert M.expected_best_of_top_k(acc, score, 2) == pytest.approx(2.2 / 3)
    # Top 1 is m1 for sure; top 4 holds everything but m3.
    assert M.expected_best_of_top_k(acc, score, 1) == pytest.approx(0.5)
    assert M.expected_best_of_top_k(acc, score, 4) == pytest.approx(0.9)


def test_trials_with_two_best_in_a_tie_by_hand():
    # Tie of 4 with 2 best: first best at position 1 w.p. 1/2, 2 w.p. 1/3, 3 w.p. 1/6:
    # 1/2 + 2/3 + 3/6 = 5/3 = (4 + 1) / (2 + 1).
    acc = {"a": 0.9, "b": 0.9, "c": 0.5, "d": 0.4}
    score = dict.fromkeys(acc, 0.0)
    assert M.expected_trials_to_best(acc, score) == pytest.approx(5 / 3)
    assert _brute_trials(acc, score) == pytest.approx(5 / 3)


def test_accuracy_tolerance_counts_near_best():
    acc = {"a": 0.80, "b": 0.795, "c": 0.5}
    score = {"b": 3.0, "c": 2.0, "a": 1.0}
    assert M.expected_trials_to_best(acc, score) == 3.0
    assert M.expected_trials_to_best(acc, score, tol=0.01) == 1.0


def test_expected_values_match_enumeration_of_tie_breakings():
    rng = np.random.default_rng(3)
    for _ in range(40):
        n = int(rng.integers(3, 7))
        models = [f"m{i}" for i in range(n)]
        acc = {m: float(rng.integers(0, 4)) / 4 for m in models}  # ties in accuracy too
        score = {}
        for m in models:
            u = rng.random()
            if u < 0.15:
                continue  # missing
            score[m] = float("nan") if u < 0.25 else float(rng.integers(0, 3))
        if not any(math.isfinite(v) for v in score.values()):
            score[models[0]] = 1.0
        tol = float(rng.choice([0.0, 0.3]))
        assert M.expected_trials_to_best(acc, score, tol) == pytest.approx(
            _brute_trials(acc, score, tol)
        )
        for k in (1, 2, 3, n + 1):
            assert M.expected_best_of_top_k(acc, score, k) == pytest.approx(
                _brute_best_of_top_k(acc, score, k)
            )


def test_failed_scores_rank_last():
    acc = {"a": 0.9, "b": 0.6, "c": 0.7, "d": 0.5}
    score = {"a": float("nan"), "b": 2.0, "c": 1.0}  # d missing
    m = M.scorer_metrics(acc, score, "b")
    # Order b, c, then {a, d} in random order: a is 3rd or 4th.
    assert m["trials_to_best"] == pytest.approx(3.5)
    assert m["top1_gain"] == pytest.approx(0.0)
    assert m["top3_gain"] == pytest.approx(100 * (0.5 * 0.9 + 0.5 * 0.7 - 0.6))
    assert m["n_finite"] == 2 and math.isnan(m["spearman"])


def test_scorer_with_no_finite_score_is_nan():
    acc = {"a": 0.9, "b": 0.6, "c": 0.7}
    m = M.scorer_metrics(acc, {"a": float("nan")}, "b", cost=1.0, finetune_seconds=2.0)
    for key in ("top1_gain", "top3_gain", "top1_regret", "trials_to_best", "spearman"):
        assert math.isnan(m[key])
    assert m["oracle_gain"] == pytest.approx(30.0)
    assert m["relative_cost"] == 0.5


def test_bad_input_raises_zoosel_errors():
    with pytest.raises(ZooselError):
        M.scorer_metrics({"a": 0.5, "b": 0.6}, {"a": 1.0}, "zzz")
    with pytest.raises(UsageError):
        M.correlations({"a": 1.5}, {"a": 1.0})
    with pytest.raises(UsageError):
        M.correlations({"a": float("nan")}, {"a": 1.0})
    with pytest.raises(UsageError):
        M.expected_best_of_top_k(ACC4, SCORE4, 0)
    with pytest.raises(UsageError):
        M.relative_cost(1.0, 0.0)
    assert math.isnan(M.relative_cost(None, 3.0))


def test_task_metrics_sorted_and_keyed_by_scorer():
    out = M.task_metrics(ACC4, {"z": SCORE4, "a": ACC4}, "D", cost={"a": 5.0}, finetune_seconds=5)
    assert list(out) == ["a", "z"]
    assert out["a"]["spearman"] == pytest.approx(1.0)
    assert out["a"]["relative_cost"] == 1.0 and math.isnan(out["z"]["relative_cost"])


def test_prediction_error_by_hand():
    acc = {"a": 0.5, "b": 0.6, "c": 0.8, "d": 0.1}
    pred = {"a": 0.55, "b": 0.5, "c": 0.9, "d": float("nan")}
    e = M.prediction_error(pred, acc)
    assert e["n"] == 3
    assert e["mae"] == pytest.approx((5 + 10 + 10) / 3)
    assert e["bias"] == pytest.approx((5 - 10 + 10) / 3)
    assert e["spearman"] == pytest.approx(0.5)  # ranks (1,2,3) vs (2,1,3)
    assert e["pearson"] == pytest.approx(stats.pearsonr([0.55, 0.5, 0.9], [0.5, 0.6, 0.8])[0])


# --------------------------------------------------------------------------- aggregation


def test_bootstrap_ci_contains_mean_deterministic_and_shrinks():
    rng = np.random.default_rng(0)
    small = list(rng.normal(0.5, 0.2, size=8))
    large = list(rng.normal(0.5, 0.2, size=400))
    a = M.bootstrap_ci(small, seed=1)
    assert a["ci_low"] <= a["mean"] <= a["ci_high"]
    assert a["mean"] == pytest.approx(np.mean(small))
    assert a == M.bootstrap_ci(small, seed=1)
    assert a != M.bootstrap_ci(small, seed=2)
    b = M.bootstrap_ci(large, seed=1)
    assert b["ci_high"] - b["ci_low"] < 0.5 * (a["ci_high"] - a["ci_low"])
    # Roughly 1.96 standard errors each side.
    se = np.std(large, ddof=1) / math.sqrt(len(large))
    assert b["ci_high"] - b["ci_low"] == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_bootstrap_ci_ignores_nan_and_degenerate_cases():
    r = M.bootstrap_ci([0.2, float("nan"), 0.4, None if False else float("inf")])
    assert r["n_tasks"] == 2 and r["n_total"] == 4 and r["mean"] == pytest.approx(0.3)
    one = M.bootstrap_ci([0.7, float("nan")])
    assert one["ci_low"] == one["ci_high"] == one["mean"] == 0.7
    none = M.bootstrap_ci([float("nan")])
    assert none["n_tasks"] == 0 and math.isnan(none["mean"])


def test_aggregate_over_tasks():
    per_task = {
        "t1": {"full": {"s": {"spearman": 0.2}}, "5-shot": {"s": {"spearman": 0.1}}},
        "t2": {"full": {"s": {"spearman": 0.4}}, "5-shot": {"s": {"spearman": float("nan")}}},
        "t3": {"full": {"s": {"spearman": 0.9}, "r": {"spearman": 0.0}}},
    }
    agg = M.aggregate(per_task, metrics=("spearman",), n_resamples=500)
    assert list(agg) == ["5-shot", "full"]
    assert agg["full"]["s"]["spearman"]["mean"] == pytest.approx(0.5)
    assert agg["full"]["s"]["spearman"]["n_tasks"] == 3
    assert agg["full"]["r"]["spearman"]["n_tasks"] == 1
    assert agg["full"]["r"]["spearman"]["n_total"] == 3
    assert agg["5-shot"]["s"]["spearman"]["n_tasks"] == 1


def test_regime_order():
    regimes = ["full-split-ablation", "full", "20-shot", "5-shot", "10-shot"]
    got = sorted(regimes, key=M.regime_sort_key)
    assert got == ["5-shot", "10-shot", "20-shot", "full", "full-split-ablation"]


# --------------------------------------------------------------------------- validity


def test_best_differs():
    ok = {"t1": {"a": 0.9, "b": 0.5}, "t2": {"a": 0.4, "b": 0.5}}
    bad = {"t1": {"a": 0.9, "b": 0.5}, "t2": {"a": 0.6, "b": 0.5}}
    r = M.check_best_differs(ok)
    assert r["passed"] and r["n_distinct_best"] == 2 and r["per_target"] == {"t1": "a", "t2": "b"}
    r = M.check_best_differs(bad)
    assert not r["passed"] and r["best_counts"] == {"a": 2}


def test_spread():
    ok = {"t1": {"a": 0.9, "b": 0.7}, "t2": {"a": 0.5, "b": 0.6}, "t3": {"a": 0.2, "b": 0.8}}
    r = M.check_spread(ok)
    assert r["passed"] and r["n_wide"] == 3 and r["per_target"]["t1"] == pytest.approx(20.0)
    bad = {"t1": {"a": 0.9, "b": 0.85}, "t2": {"a": 0.5, "b": 0.7}}
    r = M.check_spread(bad)
    assert not r["passed"] and r["fraction_wide"] == 0.5  # half is not "most"


def test_generalist_not_always_best():
    ok = {"t1": {"g": 0.9, "b": 0.5}, "t2": {"g": 0.4, "b": 0.5}}
    r = M.check_generalist_not_always_best(ok, "g")
    assert r["passed"] and r["n_generalist_best"] == 1
    bad = {"t1": {"g": 0.9, "b": 0.5}, "t2": {"g": 0.5, "b": 0.5}}
    r = M.check_generalist_not_always_best(bad, "g")
    assert not r["passed"] and r["fraction_generalist_best"] == 1.0
    assert (
        M.check_generalist_not_always_best({"t2": {"g": 0.49, "b": 0.5}}, "g", tol=0.02)[
            "n_generalist_best"
        ]
        == 1
    )


def test_noise():
    acc = {"a": 0.9, "b": 0.7, "c": 0.5}  # mean gap 20 points
    quiet = {"t": {"a": [0.89, 0.91], "b": [0.70, 0.70, 0.70]}}
    r = M.check_noise({"t": acc}, quiet)
    t = r["per_target"]["t"]
    # std of (0.89, 0.91) with ddof=1 is sqrt(2) points; mean with b's 0: sqrt(2)/2.
    assert t["noise_std"] == pytest.approx(math.sqrt(2) / 2)
    assert t["mean_gap"] == pytest.approx(20.0) and t["spread"] == pytest.approx(40.0)
    assert t["noise_over_gap"] == pytest.approx(math.sqrt(2) / 40)
    assert t["model_std"] == pytest.approx(20.0)  # std of 90, 70, 50 (ddof=1)
    assert t["noise_over_model_std"] == pytest.approx(math.sqrt(2) / 40)
    assert t["reliability"] == pytest.approx(1 - 2 / 1600)
    assert r["passed"] and t["passed"]
    noisy = {"t": {"a": [0.70, 0.95, 0.80], "c": [0.3, 0.7]}}
    r = M.check_noise({"t": acc}, noisy)
    assert not r["passed"] and r["per_target"]["t"]["noise_over_model_std"] > 0.5
    # a zoo of many close models: noise above the consecutive gap, small next to the spread
    many = {f"m{i}": 0.40 + 0.01 * i for i in range(30)}
    r = M.check_noise({"t": many}, {"t": {"m0": [0.40, 0.42], "m5": [0.45, 0.47]}})
    t = r["per_target"]["t"]
    assert t["noise_over_gap"] > 1 and t["passed"] and r["passed"]
    none = M.check_noise({"t": acc}, {"t": {"a": [0.9]}})
    assert none["passed"] is None and none["n_targets"] == 0


def _task(acc, seeds=None):
    entry = {"accuracy": acc, "scores": {"s": acc, "random": dict.fromkeys(acc, 0.0)}}
    if seeds:
        entry["seed_accuracies"] = seeds
    return entry


def test_validity_checks_combined():
    tasks = {
        "pets": {
            "5-shot": _task({"g": 0.50, "x": 0.65, "y": 0.40}, {"x": [0.64, 0.66]}),
            "full": _task({"g": 0.90, "x": 0.85, "y": 0.70}),
        },
        "cars": {"5-shot": _task({"g": 0.30, "x": 0.25, "y": 0.45}, {"y": [0.44, 0.46]})},
    }
    v = M.validity_checks(tasks, "g")
    c = v["checks"]
    assert v["passed"]
    assert c["best_differs"]["n_distinct_best"] == 3
    assert set(c["spread"]["per_target"]) == {"cars/5-shot", "pets/5-shot"}
    assert c["generalist_not_always_best"]["n_generalist_best"] == 1
    assert c["noise"]["n_targets"] == 2 and c["noise"]["passed"]


def test_evaluate_benchmark_fills_everything():
    tasks = {
        "pets": {"5-shot": _task({"g": 0.50, "x": 0.65, "y": 0.40, "z": 0.3})},
        "cars": {"5-shot": _task({"g": 0.30, "x": 0.25, "y": 0.45, "z": 0.2})},
    }
    tasks["pets"]["5-shot"]["predicted"] = {"linft": {"g": 0.5, "x": 0.6, "y": 0.45, "z": 0.3}}
    tasks["pets"]["5-shot"]["cost"] = {"s": 2.0}
    tasks["pets"]["5-shot"]["finetune_seconds"] = 4.0
    results = {"generalist": "g", "tasks": tasks}
    out = M.evaluate_benchmark(results, n_resamples=200)
    assert "metrics" not in results["tasks"]["pets"]["5-shot"]  # input untouched
    agg = out["aggregates"]["5-shot"]
    assert agg["s"]["spearman"]["mean"] == pytest.approx(1.0)
    assert agg["s"]["trials_to_best"]["mean"] == 1.0
    assert agg["random"]["trials_to_best"]["mean"] == pytest.approx(2.5)
    assert agg["s"]["relative_cost"]["n_tasks"] == 1
    assert out["tasks"]["pets"]["5-shot"]["prediction"]["linft"]["mae"] == pytest.approx(2.5)
    assert out["prediction_aggregates"]["5-shot"]["linft"]["mae"]["n_tasks"] == 1
    assert out["validity"]["checks"]["best_differs"]["passed"]
    assert out["settings"]["n_resamples"] == 200
    with pytest.raises(UsageError):
        M.evaluate_benchmark({"generalist": "g"})


def test_without_generalist_gains_are_nan():
    tasks = {"pets": {"5-shot": _task({"g": 0.50, "x": 0.65, "y": 0.40})}}
    out = M.evaluate_benchmark({"generalist": "", "tasks": tasks}, n_resamples=50)
    m = out["tasks"]["pets"]["5-shot"]["metrics"]["s"]
    assert math.isnan(m["top1_gain"]) and math.isnan(m["oracle_gain"])
    assert m["top1_regret"] == 0.0 and m["trials_to_best"] == 1.0
    assert out["validity"]["checks"]["generalist_not_always_best"]["passed"] is None


def test_ablation_regimes_do_not_count_twice_in_validity():
    truth = {"g": 0.50, "x": 0.65, "y": 0.40}
    tasks = {"pets": {"full": _task(truth), "full (full-split)": _task(truth)}}
    counted = M.evaluate_benchmark({"generalist": "g", "tasks": tasks}, n_resamples=50)
    assert counted["validity"]["checks"]["best_differs"]["n_targets"] == 2
    once = M.evaluate_benchmark({"generalist": "g", "tasks": tasks,
                                 "ablations": ["full (full-split)"]}, n_resamples=50)
    assert once["validity"]["checks"]["best_differs"]["n_targets"] == 1
    assert "full (full-split)" in once["aggregates"]  # still scored and reported


def test_family_spearman_looks_within_each_architecture():
    names = [f"a{i}" for i in range(4)] + [f"b{i}" for i in range(4)]
    zoo = [{"id": n, "arch": "cnn" if n[0] == "a" else "vit"} for n in names]
    acc = dict(zip(names, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2], strict=True))
    # right order inside each family, but the weaker family scored higher
    split = dict(zip(names, [4, 3, 2, 1, 14, 13, 12, 11], strict=True))
    flipped = dict(zip(names, [1, 2, 3, 4, 14, 13, 12, 11], strict=True))
    tasks = {"t": {"5-shot": {"accuracy": acc, "scores": {"split": split, "flipped": flipped}}}}
    out = M.family_spearman(tasks, zoo, n_resamples=50)
    assert set(out) == {"cnn", "vit"}
    assert out["cnn"]["5-shot"]["split"]["spearman"]["mean"] == pytest.approx(1.0)
    assert out["vit"]["5-shot"]["split"]["spearman"]["mean"] == pytest.approx(1.0)
    assert out["cnn"]["5-shot"]["flipped"]["spearman"]["mean"] == pytest.approx(-1.0)
    overall = M.correlations(acc, split)["spearman"]
    assert overall == pytest.approx(stats.spearmanr(list(acc.values()),
                                                    list(split.values())).statistic)
    assert overall < 0  # across families the same score looks wrong

    rng = np.random.default_rng(3)  # against scipy on random data, mean over tasks
    tasks = {f"t{k}": {"full": {
        "accuracy": {n: float(rng.uniform()) for n in names},
        "scores": {"s": {n: float(rng.normal()) for n in names}}}} for k in range(3)}
    got = M.family_spearman(tasks, zoo, n_resamples=50)["vit"]["full"]["s"]["spearman"]
    want = np.mean([stats.spearmanr([t["full"]["accuracy"][n] for n in names[4:]],
                                    [t["full"]["scores"]["s"][n] for n in names[4:]]).statistic
                    for t in tasks.values()])
    assert got["mean"] == pytest.approx(want) and got["n_tasks"] == 3
    assert M.family_spearman(tasks, zoo[:4] + [{"id": "b0", "arch": "vit"}]) == {}
    assert M.family_spearman(tasks, [{"id": n, "arch": "cnn"} for n in names]) == {}
