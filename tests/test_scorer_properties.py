"""Properties every registered scorer must have, checked with hypothesis.

The scorers are whatever ``zoosel.plugins`` registers when the tests are collected,
restricted to those that need only features and/or source-head probabilities, which are
generated here:

* relabelling the classes and permuting the samples change nothing, except for the
  scorers listed (with the reason) in ``NOT_RELABEL_INVARIANT`` / ``NOT_PERMUTATION_INVARIANT``;
* global scale and rotation invariance for the scorers that claim them: ``CLAIMS`` below,
  checked against the module docstrings; scorers missing from ``CLAIMS`` are held to
  what their docstring claims;
* degenerate inputs (one class, a one-sample class, constant features, N < D, duplicated
  samples, D = 1, scales 1e-6 and 1e6, float16/32/64) give a finite float or a
  ScoringError, never NaN/inf or another exception; NaN/inf inputs give a ScoringError;
* pool-relative scorers give a dict of finite components, and ``pool_normalize`` turns a
  pool of 1 and of 3 candidates into finite scores.

Hypothesis runs derandomised (the same examples every run) without a database; set
``ZOOSEL_HYPOTHESIS_SCALE=4`` (a multiplier of every example budget) and
``ZOOSEL_HYPOTHESIS_RANDOM=1`` for a longer, randomised search.
"""

from __future__ import annotations

import math
import os
import re
import sys

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from zoosel import plugins  # noqa: E402
from zoosel.errors import ScoringError  # noqa: E402
from zoosel.types import Need, ScoreInputs, Scorer  # noqa: E402

# ------------------------------------------------------------------------ the scorers

# Scorers whose value may change when the class ids are permuted: name -> reason.
NOT_RELABEL_INVARIANT: dict[str, str] = {}

# Scorers whose value may change when the samples are permuted: name -> reason.
# (An entry does not fail if the scorer turns out invariant after all.)
NOT_PERMUTATION_INVARIANT: dict[str, str] = {
    "linear_probe": "seeded stratified folds are dealt by sample position",
    "nleep": "the seeded mixture initialisation draws sample positions",
    "random": "a seeded draw keyed on the row-major bytes of the features",
    "rankagg": "one of its components is nleep's value",
}

# What each scorer claims, as its module docstring states it (test_claims_match_docstrings).
CLAIMS: dict[str, frozenset[str]] = {
    "lfc": frozenset({"scale", "rotation"}),
    "logme": frozenset({"scale", "rotation"}),
    "knn": frozenset({"scale", "rotation"}),
    "linear_probe": frozenset({"scale"}),
    "hscore": frozenset({"scale", "rotation"}),
    "hscore_reg": frozenset({"scale", "rotation"}),
    "gbc": frozenset({"scale"}),
    "nleep": frozenset({"scale", "rotation"}),
    "pactran": frozenset({"rotation"}),
    "sfda": frozenset({"rotation"}),
    "transrate": frozenset({"rotation"}),
    "feature_sparsity": frozenset({"scale"}),
    "etran": frozenset(),
    "ncti": frozenset({"rotation"}),
}

# Where the automatic reading of the docstring (_docstring_claims) is wrong: name -> why.
DOCSTRING_NOTES: dict[str, str] = {
    "etran": "rotation invariance is stated for its LDA term only, not for the score",
}

# Relative tolerance of the invariance checks, for scores fitted iteratively to a
# tolerance (default 1e-6).
TOLERANCE: dict[str, float] = {"pactran": 1e-4}

# Hypothesis examples per scorer and property (before ZOOSEL_HYPOTHESIS_SCALE).
DEFAULT_EXAMPLES = 25
EXAMPLES: dict[str, int] = {
    "linear_probe": 12, "nleep": 10, "pactran": 12, "sfda": 15, "rankagg": 6,
}

_SUPPORTED_NEEDS = {Need.FEATURES, Need.SOURCE_PROBS}


def _collect() -> dict[str, Scorer]:
    found = plugins.collect("register_scorers", "scorer")
    return {
        name: s for name, s in sorted(found.items())
        if s.needs and set(s.needs) <= _SUPPORTED_NEEDS
    }


SCORERS = _collect()
FEATURE_SCORERS = sorted(n for n, s in SCORERS.items() if Need.FEATURES in s.needs)


def _settings(name: str, factor: float = 1.0) -> settings:
    scale = float(os.environ.get("ZOOSEL_HYPOTHESIS_SCALE", "1"))
    examples = max(1, round(EXAMPLES.get(name, DEFAULT_EXAMPLES) * factor * scale))
    return settings(
        max_examples=examples, deadline=None, database=None,
        derandomize=not os.environ.get("ZOOSEL_HYPOTHESIS_RANDOM"),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# tiny tensors: one thread is faster, and immune to oversubscribed machines
pytestmark = pytest.mark.usefixtures("one_torch_thread_per_test")


# ------------------------------------------------------------------ running a scorer


def _run(scorer: Scorer, inputs: ScoreInputs) -> float | dict[str, float] | None:
    """The scorer's value (None for a ScoringError); fails on any other outcome."""
    try:
        value = scorer.fn(inputs)
    except ScoringError:
        return None
    except Exception as exc:  # noqa: BLE001 - the point is to report any other type
        pytest.fail(
            f"scorer {scorer.name!r} raised {type(exc).__name__} (only ScoringError is "
            f"allowed): {exc}"
        )
    if scorer.pool_normalize is None:
        assert isinstance(value, float) and not isinstance(value, bool), (
            f"scorer {scorer.name!r} returned {type(value).__name__}, not a float"
        )
        assert math.isfinite(value), f"scorer {scorer.name!r} returned {value}"
    else:
        assert isinstance(value, dict) and value, (
            f"pool-relative scorer {scorer.name!r} returned {value!r}, not a dict"
        )
        for key, part in value.items():
            assert isinstance(key, str), f"scorer {scorer.name!r}: component key {key!r}"
            assert isinstance(part, float) and math.isfinite(part), (
                f"scorer {scorer.name!r}: component {key!r} = {part!r}"
            )
    return value


def _assert_same(name: str, what: str, a, b) -> None:
    rel, abs_ = TOLERANCE.get(name, 1e-6), 1e-9
    where = f"scorer {name!r}, {what}"
    if a is None or b is None:
        assert a is None and b is None, f"{where}: ScoringError for one input only ({a}, {b})"
        return
    if isinstance(a, dict):
        assert set(a) == set(b), f"{where}: components {sorted(a)} vs {sorted(b)}"
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=rel, abs=abs_), f"{where}: {key}"
        return
    assert a == pytest.approx(b, rel=rel, abs=abs_), f"{where}: {a!r} vs {b!r}"


def _inputs(scorer: Scorer, y, num_classes, features=None, probs=None) -> ScoreInputs:
    return ScoreInputs(
        labels=torch.as_tensor(y, dtype=torch.int64),
        num_classes=num_classes,
        features=features if Need.FEATURES in scorer.needs else None,
        source_probs=probs if Need.SOURCE_PROBS in scorer.needs else None,
    )


# ------------------------------------------------------------------------- the data


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@st.composite
def nice_cases(draw):
    """Well-conditioned data: 2-4 classes of >= 3 samples, Gaussian class structure."""
    c = draw(st.integers(2, 4))
    n = draw(st.integers(3 * c, 40))
    d = draw(st.integers(1, 16))
    cs = draw(st.integers(2, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    y = rng.permutation(np.arange(n) % c)
    f = rng.normal(size=(c, d))[y] + 0.8 * rng.normal(size=(n, d))
    probs = _softmax(2.0 * rng.normal(size=(n, cs)) + 1.5 * np.eye(cs)[y % cs])
    relabel = rng.permutation(c)
    if np.array_equal(relabel, np.arange(c)):
        relabel = np.roll(relabel, 1)
    return {
        "y": y, "c": c, "f": f, "probs": probs, "relabel": relabel,
        "perm": rng.permutation(n), "rotation": np.linalg.qr(rng.normal(size=(d, d)))[0],
        "scale": draw(st.sampled_from([1e-3, 0.37, 8.0, 1e3])),
    }


DEGENERATE = (
    "gaussian", "relu", "one_class", "one_sample_class", "constant", "constant_columns",
    "n_less_than_d", "duplicates", "one_dim", "integer", "zero_rows", "offset",
)


@st.composite
def degenerate_cases(draw):
    kind = draw(st.sampled_from(DEGENERATE))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(2, 40))
    d = 1 if kind == "one_dim" else draw(st.integers(1, 16))
    if kind == "n_less_than_d":
        d, n = 16, min(n, 12)
    c = draw(st.integers(2, 5))
    y = rng.integers(0, c, size=n)
    y[: min(2, n)] = [0, 1][: min(2, n)]
    num_classes = c
    if kind == "one_class":
        y[:] = 0
    if kind == "one_sample_class":
        y[rng.integers(n)] = c
        num_classes = c + 1
    f = rng.normal(size=(n, d))
    if kind == "relu":
        f = np.maximum(f + rng.normal(size=(num_classes, d))[y], 0.0)
    elif kind == "constant":
        f = np.repeat(rng.normal(size=(1, d)), n, axis=0)
    elif kind == "constant_columns":
        f[:, : (d + 1) // 2] = rng.normal(size=(d + 1) // 2)
    elif kind == "duplicates":
        f[n // 2:] = f[: n - n // 2]
    elif kind == "integer":
        f = rng.integers(-2, 3, size=(n, d)).astype(np.float64)
    elif kind == "zero_rows":
        f[rng.random(n) < 0.3] = 0.0
    elif kind == "offset":
        f = f + 1e3
    scale = draw(st.sampled_from([1e-6, 1.0, 1e6]))
    dtype = draw(st.sampled_from([torch.float16, torch.float32, torch.float64]))
    cs = draw(st.integers(1, 8))
    pkind = draw(st.sampled_from(["softmax", "one_hot", "uniform", "sparse"]))
    if pkind == "softmax":
        probs = _softmax(3.0 * rng.normal(size=(n, cs)))
    elif pkind == "one_hot":
        probs = np.eye(cs)[rng.integers(0, cs, size=n)]
    elif pkind == "uniform":
        probs = np.full((n, cs), 1.0 / cs)
    else:
        probs = _softmax(rng.normal(size=(n, cs)))
        probs[:, 0] = 0.0
        probs = probs / probs.sum(axis=1, keepdims=True) if cs > 1 else np.ones((n, 1))
    with np.errstate(over="ignore"):
        features = torch.from_numpy(f * scale).to(dtype)  # float16 may overflow to inf
    return {
        "kind": kind, "y": y, "num_classes": num_classes, "features": features,
        "probs": torch.from_numpy(probs).to(dtype),
    }


# ------------------------------------------------------------------------ the tests


def _claims(name: str) -> frozenset[str]:
    if name in CLAIMS:
        return CLAIMS[name]
    return frozenset(_docstring_claims(_module_doc(SCORERS[name]))[0])


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_invariances(name: str) -> None:
    scorer = SCORERS[name]
    claims = _claims(name) if Need.FEATURES in scorer.needs else frozenset()

    @_settings(name)
    @given(case=nice_cases())
    def check(case) -> None:
        y, c, f, probs = case["y"], case["c"], case["f"], case["probs"]
        ft, pt = torch.from_numpy(f), torch.from_numpy(probs)
        base = _run(scorer, _inputs(scorer, y, c, ft, pt))
        if name not in NOT_RELABEL_INVARIANT:
            other = _run(scorer, _inputs(scorer, case["relabel"][y], c, ft, pt))
            _assert_same(name, "relabelled classes", base, other)
        if name not in NOT_PERMUTATION_INVARIANT:
            p = case["perm"]
            other = _run(scorer, _inputs(scorer, y[p], c, ft[p], pt[p]))
            _assert_same(name, "permuted samples", base, other)
        if "scale" in claims:
            other = _run(scorer, _inputs(scorer, y, c, ft * case["scale"], pt))
            _assert_same(name, f"features scaled by {case['scale']}", base, other)
        if "rotation" in claims:
            rotated = torch.from_numpy(f @ case["rotation"])
            other = _run(scorer, _inputs(scorer, y, c, rotated, pt))
            _assert_same(name, "features rotated", base, other)

    check()


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_degenerate_inputs_give_a_finite_value_or_scoring_error(name: str) -> None:
    scorer = SCORERS[name]

    @_settings(name)
    @given(case=degenerate_cases())
    def check(case) -> None:
        value = _run(scorer, _inputs(scorer, case["y"], case["num_classes"],
                                     case["features"], case["probs"]))
        if scorer.pool_normalize is not None and value is not None:
            _check_pool(scorer, case, value)

    check()


def _check_pool(scorer: Scorer, case: dict, first: dict[str, float]) -> None:
    """pool_normalize over 1 and 3 candidates (the others: rescaled/shifted features)."""
    pool = {"a": first}
    for key, shift in (("b", 0.5), ("c", -2.0)):
        features = case["features"].to(torch.float64) * (1.0 + abs(shift)) + shift
        inputs = _inputs(scorer, case["y"], case["num_classes"], features, case["probs"])
        value = _run(scorer, inputs)
        if value is not None:
            pool[key] = value
    for subset in ({"a": first}, pool):
        try:
            scores = scorer.pool_normalize(subset)
        except ScoringError:
            continue
        assert set(scores) == set(subset), f"scorer {scorer.name!r}: pool keys {scores}"
        for key, v in scores.items():
            assert isinstance(v, float) and math.isfinite(v), (
                f"scorer {scorer.name!r}: pool_normalize gave {key!r} = {v!r}"
            )


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_non_finite_inputs_are_rejected(name: str) -> None:
    scorer = SCORERS[name]
    rng = np.random.default_rng(0)
    y = np.arange(24) % 3
    f = rng.normal(size=(24, 5))
    probs = _softmax(rng.normal(size=(24, 4)))
    for bad in (float("nan"), float("inf"), -float("inf")):
        for dtype in (torch.float32, torch.float64):
            for target in ("features", "probs"):
                need = Need.FEATURES if target == "features" else Need.SOURCE_PROBS
                if need not in scorer.needs:
                    continue
                ft = torch.from_numpy(f).to(dtype)
                pt = torch.from_numpy(probs).to(dtype)
                (ft if target == "features" else pt)[7, 2] = bad
                with pytest.raises(ScoringError):
                    scorer.fn(_inputs(scorer, y, 3, ft, pt))


# ------------------------------------------------------------- claims vs docstrings

_NEGATION = re.compile(r"\b(?:not|no|nor|neither|never|isn't|aren't)\b")
_KEYWORDS = {"scale": re.compile(r"\bscal|\brescal"), "rotation": re.compile(r"\brotat")}


def _docstring_claims(doc: str) -> tuple[set[str], set[str]]:
    """(claimed, denied) invariances among scale/rotation, read from a docstring.

    Sentences (split at '.' and ';') that mention invariance are cut into clauses at
    commas, parentheses, colons and 'but'; a keyword is denied when a negation precedes
    it in its clause, claimed otherwise. A denial wins over a claim.
    """
    text = " ".join(doc.split()).lower()
    claimed: set[str] = set()
    denied: set[str] = set()
    for sentence in re.split(r"(?<=[.;])[\s)]+|::", text):
        if "invarian" not in sentence:
            continue
        for clause in re.split(r"[,():]|\bbut\b|\bwhereas\b", sentence):
            negation = _NEGATION.search(clause)
            for key, pattern in _KEYWORDS.items():
                hit = pattern.search(clause)
                if hit:
                    negated = negation is not None and negation.start() < hit.start()
                    (denied if negated else claimed).add(key)
    return claimed - denied, denied


def _module_doc(scorer: Scorer) -> str:
    module = sys.modules.get(getattr(scorer.fn, "__module__", ""), None)
    return (module.__doc__ if module is not None else None) or ""


def test_docstring_reader() -> None:
    doc = """Score.

    Invariances: relabelling, permutation; it is scale invariant (any global
    scale) and rotation invariant. It is not invariant to translation.
    """
    assert _docstring_claims(doc) == ({"scale", "rotation"}, set())
    doc = "Invariant to feature scaling, but not to rotations (orthogonal maps)."
    assert _docstring_claims(doc) == ({"scale"}, {"rotation"})
    doc = "Not scale invariant (at usual scales it is scale invariant in practice)."
    assert _docstring_claims(doc) == (set(), {"scale"})
    doc = "The penalty is rotation invariant and the gradient never leaves the row space."
    assert _docstring_claims(doc) == ({"rotation"}, set())
    assert _docstring_claims("Cost: scales as N^2. No invariance stated here.") == (set(), set())


@pytest.mark.parametrize("name", FEATURE_SCORERS)
def test_claims_match_docstrings(name: str) -> None:
    if name not in CLAIMS:
        pytest.skip(f"{name!r} is not in CLAIMS: its docstring's claims are used as they are")
    if name in DOCSTRING_NOTES:
        pytest.skip(f"{name!r}: {DOCSTRING_NOTES[name]}")
    claimed, denied = _docstring_claims(_module_doc(SCORERS[name]))
    if not claimed and not denied:
        pytest.xfail(
            f"the module docstring of {name!r} states no scale/rotation invariance; "
            f"the table claims {sorted(CLAIMS[name])}"
        )
    assert claimed == set(CLAIMS[name]), (
        f"scorer {name!r}: docstring claims {sorted(claimed)} (denies {sorted(denied)}), "
        f"CLAIMS says {sorted(CLAIMS[name])}"
    )


def test_pool_harness_accepts_a_good_pool_scorer_and_catches_a_bad_one() -> None:
    def components(inputs: ScoreInputs) -> dict[str, float]:
        return {"norm": float(inputs.features.double().norm(dim=1).mean())}

    def normalise(pool: dict[str, dict[str, float]]) -> dict[str, float]:
        norms = {c: parts["norm"] for c, parts in pool.items()}
        lo, hi = min(norms.values()), max(norms.values())
        return {c: (v - lo) / (hi - lo) if hi > lo else 0.0 for c, v in norms.items()}

    good = Scorer("pool_ok", components, frozenset({Need.FEATURES}), "test",
                  pool_normalize=normalise)
    case = {"y": np.array([0, 1, 0, 1]), "num_classes": 2,
            "features": torch.randn(4, 3), "probs": None}
    first = _run(good, _inputs(good, case["y"], 2, case["features"]))
    _check_pool(good, case, first)
    bad = Scorer("pool_bad", components, frozenset({Need.FEATURES}), "test",
                 pool_normalize=lambda pool: {c: math.nan for c in pool})
    with pytest.raises(AssertionError, match="pool_bad"):
        _check_pool(bad, case, first)
    wrong = Scorer("wrong_type", lambda inputs: 1, frozenset({Need.FEATURES}), "test")
    with pytest.raises(AssertionError, match="wrong_type"):
        _run(wrong, _inputs(wrong, case["y"], 2, case["features"]))
