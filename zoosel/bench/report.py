"""Write the benchmark report: ``report.md``, ``results.json`` and PNG figures.

Results dict (JSON-able). Required input, produced by the pipeline::

    {
      "generalist": "<model id>",            # baseline of the gain metrics ("" or absent:
                                              # gains NaN, validity check 3 not run)
      "tasks": {
        "<task>": {
          "<regime>": {                       # "5-shot", "20-shot", "full", ...
            "accuracy": {"<model>": float},   # fine-tuned test accuracy in [0, 1],
                                              # seed mean at the lr chosen on validation
            "scores": {"<scorer>": {"<model>": float}},   # NaN / missing = failed
            # optional:
            "seed_accuracies": {"<model>": [float, ...]}, # models run with several seeds
            "cost": {"<scorer>": float},      # seconds to score the zoo (extraction incl.)
            "finetune_seconds": float,        # mean wall time of one fine-tuning run
            "predicted": {"<scorer>": {"<model>": float}},  # linft predicted accuracy
          }
        }
      },
      # optional:
      "ablations": ["full (full-split)"],        # regimes that re-score another one: left
                                                   # out of the validity checks
      "regimes": ["5-shot", "20-shot", "full"],   # display order (default: 5-shot < 20-shot
                                                   # < full < others by name)
      "key_selectors": ["<scorer>", ...],         # drawn in the scatter plots (default: the
                                                   # 4 best by mean Spearman)
      "zoo": [{"id": str, "arch": str, "source_domain": str, "init": str,
               "source_accuracy": float, "build_seconds": float, ...}],  # extra keys shown
      "build": {"<stage>": seconds},              # build times of the benchmark stages
      "meta": {"<key>": value},                   # free-form, listed at the top
      "scorer_versions": {"<scorer>": "<version>"},  # as used in the build: a score
                                                   # whose installed scorer has another
                                                   # version is marked stale
    }

Derived keys, added by :func:`zoosel.bench.metrics.evaluate_benchmark` when ``aggregates``
is absent (pass an already evaluated dict to choose ``n_resamples``, ``seed`` or ``tol``):
``tasks[t][r]["metrics"][scorer][metric]``, ``tasks[t][r]["prediction"][scorer]``,
``aggregates[regime][scorer][metric] = {mean, ci_low, ci_high, n_tasks, n_total}``,
``prediction_aggregates`` (same shape, metrics mae/bias/pearson/spearman), ``validity``
and ``settings``. ``results.json`` holds the evaluated dict with NaN and infinities
written as ``null``; it can be fed back to :func:`write_report`.

Selectors are listed by name, tasks by name, regimes in the order above.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from zoosel.bench.metrics import METRICS, evaluate_benchmark, regime_sort_key
from zoosel.bench.results_file import VersionCheck, check_versions, load_results
from zoosel.errors import UsageError

HEADLINE_REGIMES: tuple[str, ...] = ("5-shot", "20-shot", "full")
HEADLINE_METRICS: tuple[str, ...] = ("spearman", "weighted_tau", "trials_to_best", "top3_gain")

LABELS: dict[str, str] = {
    "spearman": "Spearman",
    "kendall": "Kendall",
    "weighted_tau": "weighted tau",
    "top1_gain": "top-1 gain",
    "top3_gain": "top-3 gain",
    "oracle_gain": "oracle gain",
    "top1_regret": "top-1 regret",
    "trials_to_best": "trials to best",
    "relative_cost": "relative cost",
    "mae": "MAE (points)",
    "bias": "bias (points)",
    "pearson": "Pearson",
}

_DECIMALS: dict[str, int] = {
    "top1_gain": 1,
    "top3_gain": 1,
    "oracle_gain": 1,
    "top1_regret": 1,
    "trials_to_best": 1,
    "mae": 1,
    "bias": 1,
}

_NO_PLOTS = (
    "matplotlib is not installed, so no figures were drawn "
    "(`pip install 'zoosel[bench]'` and write the report again)."
)


# --------------------------------------------------------------------------- helpers


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _fmt(v: Any, metric: str = "") -> str:
    x = _num(v)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if metric == "relative_cost" and 0 < abs(x) < 0.01:
        return f"{x:.1e}"
    return f"{x:.{_DECIMALS.get(metric, 2)}f}"


def _fmt_ci(cell: Mapping[str, Any] | None, metric: str) -> str:
    """``"0.52 [0.31, 0.70]"``, with ``(2/3)`` appended when tasks were left out."""
    if not cell or math.isnan(_num(cell.get("mean"))):
        return "n/a"
    text = f"{_fmt(cell['mean'], metric)} [{_fmt(cell.get('ci_low'), metric)}, "
    text += f"{_fmt(cell.get('ci_high'), metric)}]"
    n, total = cell.get("n_tasks"), cell.get("n_total")
    if n is not None and total is not None and n < total:
        text += f" ({n}/{total})"
    return text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def _jsonable(x: Any) -> Any:
    """Plain JSON types with NaN and infinities as None; mapping keys as strings."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "tolist"):  # numpy scalars and arrays
        return _jsonable(x.tolist())
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    raise UsageError(f"results hold a value that JSON cannot store: {type(x).__name__}.")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def _evaluated(results: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(results, Mapping) or "tasks" not in results:
        raise UsageError("results must be a dict with 'tasks' (and 'generalist').")
    if "aggregates" in results and "validity" in results:
        return dict(results)
    return evaluate_benchmark(results)


def _regimes(results: Mapping[str, Any]) -> list[str]:
    present = set(results.get("aggregates", {}))
    for per_regime in results["tasks"].values():
        present |= set(per_regime)
    order = [r for r in results.get("regimes") or [] if r in present]
    return order + sorted(present - set(order), key=regime_sort_key)


def _scorers(results: Mapping[str, Any]) -> list[str]:
    """The measured selectors by name, then the rows the evaluation derived (dataset-blind
    rankings, the default selector) in the order it added them."""
    names = {s for per in results.get("aggregates", {}).values() for s in per}
    derived = [s for s in results.get("derived_scores") or () if s in names]
    return sorted(names - set(derived)) + derived


def _oracle(results: Mapping[str, Any], regime: str) -> Mapping[str, Any] | None:
    per = results.get("aggregates", {}).get(regime, {})
    return per[min(per)]["oracle_gain"] if per else None


# --------------------------------------------------------------------------- markdown


STALE_MARK = " (stale)"
"""Appended to the row of a score computed by another version of its scorer."""


def _versions_line(check: VersionCheck) -> str:
    """The report's line on the scorer versions the results record."""
    if not check.recorded:
        return ("not recorded (results written before zoosel recorded them: a score "
                "computed by an older version of its scorer cannot be told apart)")
    if not check.stale:
        return f"recorded; {check.summary()}"
    return (f"recorded; {check.summary('**stale**')}. A stale score was computed by another "
            f"version of its scorer than the installed one: its rows are marked{STALE_MARK}, "
            "and `zoosel bench fit` leaves it out.")


def _label(scorer: str, stale: Collection[str]) -> str:
    return f"{scorer}{STALE_MARK}" if scorer in stale else scorer


def headline_markdown(results: Mapping[str, Any], stale: Collection[str] | None = None) -> str:
    """The headline table: selectors x (Spearman, weighted tau, trials, top-3 gain) per regime.

    Uses the regimes 5-shot, 20-shot and full that are present (all regimes if none is).
    Cells are the mean over tasks with the bootstrap 95% interval. Rows of ``stale``
    scores (default: those :func:`zoosel.bench.results_file.check_versions` finds) are
    marked.
    """
    res = _evaluated(results)
    stale = check_versions(res).stale if stale is None else stale
    regimes = [r for r in _regimes(res) if r in HEADLINE_REGIMES] or _regimes(res)
    agg = res.get("aggregates", {})
    header = ["Selector"] + [f"{LABELS[m]}, {r}" for r in regimes for m in HEADLINE_METRICS]
    rows = []
    for scorer in _scorers(res):
        row = [_label(scorer, stale)]
        for r in regimes:
            cells = agg.get(r, {}).get(scorer, {})
            row += [_fmt_ci(cells.get(m), m) for m in HEADLINE_METRICS]
        rows.append(row)
    oracle = ["*oracle*"]
    for r in regimes:
        oracle += ["", "", "1.0", _fmt_ci(_oracle(res, r), "top3_gain")]
    rows.append(oracle)
    n_tasks = len(res["tasks"])
    note = (
        f"Mean over {n_tasks} task(s) with a bootstrap 95% interval over tasks; "
        f"gains are accuracy points over the generalist `{res.get('generalist')}`, "
        "trials to best count fine-tunings in score order (lower is better). "
        "(k/n): only k of n tasks had a value."
    )
    return "\n".join([*_table(header, rows), "", note]) + "\n"


def _regime_section(res: Mapping[str, Any], regime: str, stale: Collection[str] = ()
                    ) -> list[str]:
    agg = res["aggregates"].get(regime, {})
    header = ["Selector", *(LABELS[m] for m in METRICS)]
    rows = [[_label(s, stale), *(_fmt_ci(agg[s].get(m), m) for m in METRICS)]
            for s in _scorers(res) if s in agg]
    return [f"### {regime}", "", *_table(header, rows), ""]


def _task_section(res: Mapping[str, Any], task: str, regime: str) -> list[str]:
    entry = res["tasks"][task][regime]
    acc = entry["accuracy"]
    best = min(acc, key=lambda m: (-acc[m], m))
    gen = res.get("generalist")
    gen_acc = acc.get(gen)
    spread = 100 * (max(acc.values()) - min(acc.values()))
    lines = [
        f"#### {task} / {regime}",
        "",
        f"{len(acc)} models; best `{best}` {100 * acc[best]:.1f}%, generalist "
        + (f"{100 * gen_acc:.1f}%" if gen_acc is not None else "n/a")
        + f", spread {spread:.1f} points"
        + (
            f", one fine-tuning {_num(entry['finetune_seconds']):.1f} s"
            if entry.get("finetune_seconds") is not None
            else ""
        )
        + ".",
        "",
    ]
    metrics = entry.get("metrics", {})
    shown = [m for m in METRICS if m != "oracle_gain"]
    header = ["Selector", *(LABELS[m] for m in shown), "finite / models"]
    rows = []
    for s in [s for s in _scorers(res) if s in metrics]:
        cell = metrics[s]
        n_fin, n_mod = cell.get("n_finite"), cell.get("n_models")
        rows.append([s, *(_fmt(cell.get(m), m) for m in shown), f"{n_fin} / {n_mod}"])
    return [*lines, *_table(header, rows), ""]


_CHECK_ORDER = ("best_differs", "spread", "generalist_not_always_best", "noise",
                "static_baseline_beaten")


def _target_key(target: str) -> tuple[str, tuple[int, int, str]]:
    task, _, regime = target.rpartition("/")
    return (task, regime_sort_key(regime))


def _validity_section(res: Mapping[str, Any]) -> list[str]:
    val = res.get("validity") or {}
    checks = val.get("checks", {})
    if not checks:
        return ["No validity checks in these results.", ""]

    def verdict(p: Any) -> str:
        return "n/a" if p is None else ("pass" if p else "FAIL")

    summary = {
        "best_differs": lambda c: f"{c['n_distinct_best']} distinct best over {c['n_targets']}",
        "spread": lambda c: f"{c['n_wide']}/{c['n_targets']} few-shot targets >= 10 points",
        "generalist_not_always_best": lambda c: (
            f"generalist best on {c['n_generalist_best']}/{c['n_targets']}"
        ),
        "noise": lambda c: (
            f"{c['n_pass']}/{c['n_targets']} targets pass; median noise / model std "
            f"{_fmt(c.get('median_noise_over_model_std'))}, noise / consecutive gap "
            f"{_fmt(c.get('median_noise_over_gap'))}"
        ),
        "static_baseline_beaten": lambda c: "; ".join(
            f"{t[0]} {LABELS[t[1]]}: `{v['leaders'][0]}` better by "
            f"{_fmt_ci(v['margins'][v['leaders'][0]], t[1])}"
            for t, v in sorted(((tuple(k.rsplit("/", 1)), v) for k, v in
                                c["per_target"].items()),
                               key=lambda kv: (regime_sort_key(kv[0][0]), kv[0][1]))),
    }
    order = [n for n in _CHECK_ORDER if n in checks] + sorted(set(checks) - set(_CHECK_ORDER))
    rows = []
    for name in order:
        c = checks[name]
        text = summary[name](c) if name in summary else ""
        rows.append([name, verdict(c.get("passed")), text, c.get("rule", "")])
    lines = [
        f"Overall: **{verdict(val.get('passed'))}**.",
        "",
        *_table(["Check", "Result", "Numbers", "Rule"], rows),
        "",
    ]
    targets = sorted(checks.get("best_differs", {}).get("per_target", {}), key=_target_key)
    spread = checks.get("spread", {}).get("per_target", {})
    gen = checks.get("generalist_not_always_best", {}).get("per_target", {})
    noise = checks.get("noise", {}).get("per_target", {})
    rows = []
    for t in targets:
        nz = noise.get(t, {})
        rows.append(
            [
                t,
                checks["best_differs"]["per_target"][t],
                _fmt(spread[t], "oracle_gain") if t in spread else "",
                "yes" if gen.get(t) else "no",
                _fmt(nz.get("noise_std")) if nz else "",
                _fmt(nz.get("model_std")) if nz else "",
                _fmt(nz.get("mean_gap")) if nz else "",
                _fmt(nz.get("noise_over_model_std")) if nz else "",
            ]
        )
    header = [
        "Target",
        "Best model",
        "Spread (few-shot)",
        "Generalist best",
        "Seed std (points)",
        "Model std (points)",
        "Mean gap (points)",
        "Noise / model std",
    ]
    return [*lines, *_table(header, rows), ""]


def _prediction_section(res: Mapping[str, Any]) -> list[str]:
    pa = res.get("prediction_aggregates") or {}
    if not pa:
        return ["No predicted accuracies in these results.", ""]
    cols = ("mae", "bias", "pearson", "spearman")
    lines = [
        "Predicted vs real fine-tuned accuracy (mean over tasks, bootstrap 95% interval).",
        "",
    ]
    rows = [
        [r, s, *(_fmt_ci(pa[r][s].get(c), c) for c in cols)]
        for r in sorted(pa, key=regime_sort_key)
        for s in sorted(pa[r])
    ]
    header = ["Regime", "Scorer", *(LABELS[c] for c in cols)]
    return [*lines, *_table(header, rows), ""]


def _family_section(res: Mapping[str, Any]) -> list[str]:
    fam = res.get("family_aggregates") or {}
    if not fam:
        return []
    regimes = [r for r in _regimes(res) if r in HEADLINE_REGIMES] or _regimes(res)
    columns = [(a, r) for a in sorted(fam) for r in regimes]
    rows = [[s, *(_fmt_ci(fam[a].get(r, {}).get(s, {}).get("spearman"), "spearman")
                  for a, r in columns)] for s in _scorers(res)]
    header = ["Selector", *(f"Spearman, {a}, {r}" for a, r in columns)]
    return [
        "## Within one architecture",
        "",
        "The zoo mixes architectures, and a score is rewarded for telling them apart. This "
        "is Spearman among the members of one architecture only (mean [bootstrap 95% "
        "interval] over tasks).",
        "",
        *_table(header, rows),
        "",
    ]


MARGIN_METRICS: tuple[str, ...] = (
    "spearman", "kendall", "weighted_tau", "top1_gain", "top3_gain", "top1_regret",
    "trials_to_best",
)


def _margin_section(res: Mapping[str, Any]) -> list[str]:
    margin = res.get("margins") or {}
    if not margin:
        return []
    regimes = [r for r in _regimes(res) if r in margin and r in HEADLINE_REGIMES] or [
        r for r in _regimes(res) if r in margin]
    lines = [
        "### Margin over the dataset-blind ranking",
        "",
        "Each selector's metric minus that of `blind:static` (for regret and trials to "
        "best, `blind:static`'s minus the selector's), so that **positive is better than "
        "the ranking that never looks at the target**; mean [bootstrap 95% interval] over "
        "tasks, resampled in pairs.",
        "",
    ]
    header = ["Selector", *(LABELS[m] for m in MARGIN_METRICS)]
    for regime in regimes:
        rows = [[s, *(_fmt_ci(margin[regime][s].get(m), m) for m in MARGIN_METRICS)]
                for s in _scorers(res) if s in margin[regime]]
        lines += [f"#### {regime}", "", *_table(header, rows), ""]
    return lines


def _combination_section(res: Mapping[str, Any]) -> list[str]:
    fit = res.get("combination") or {}
    if not fit:
        return []
    lines = [
        "### The default selector, chosen by leave-one-target-out cross-validation",
        "",
        f"Search space: each single score of {', '.join(f'`{p}`' for p in fit['pool'])}, "
        f"and every combination of 2 to {fit['max_size']} of them, each standardised over "
        f"the zoo ({' or '.join(fit['methods'])}: z-score or rank position) and averaged "
        f"({fit['n_candidates']} candidates). Objective: {fit['objective']} "
        f"({', '.join(fit['regimes'])}). For each held-out task the candidate is chosen on "
        "the other tasks only and then ranks the held-out task: row `loto:consensus`. Row "
        "`loto:single` is the same protocol restricted to single scores. Row `consensus` is "
        "the candidate fitted on every task, shipped as `zoosel select`'s default sort: "
        "on this benchmark it is **in-sample**, so `loto:consensus` is the estimate to "
        "trust.",
        "",
        f"Fit on every task: `{fit['fit_all']}` (single score: `{fit['single_fit_all']}`); "
        f"shipped default (`zoosel.scorers.consensus`): `{fit['shipped']}`"
        + ("" if fit.get("shipped_matches_fit") else
           " -- **differs from this build's fit**: compare the rows `consensus` (shipped) and "
           "`loto:consensus` (this fit, held out) below, and `zoosel bench fit` over every "
           "build, before changing the constants") + ".",
        "",
        *_table(["Held-out task", "Combination chosen on the others", "Single score chosen"],
                [[t, f"`{fit['picks'][t]}`", f"`{fit['single_picks'][t]}`"]
                 for t in sorted(fit["picks"])]),
        "",
    ]
    verdict = fit.get("verdict") or {}
    if verdict.get("margins"):
        cols = [(r, m) for r in verdict["regimes"] for m in verdict["metrics"]]
        others = sorted({o for per in verdict["margins"].values() for row in per.values()
                         for o in row})
        rows = [[o, *(_fmt_ci(verdict["margins"][r][m].get(o), m) for r, m in cols)]
                for o in others]
        beaten = verdict.get("not_beaten") or []
        lines += [
            f"Does `{verdict['candidate']}` beat every single score and the dataset-blind "
            "ranking on top-1 regret and trials to best? Its margin over each (positive: "
            "`loto:consensus` is better; paired bootstrap over tasks):",
            "",
            *_table(["Compared with", *(f"{LABELS[m]}, {r}" for r, m in cols)], rows),
            "",
            f"Beats every one on the mean: **{'yes' if verdict['beats_all'] else 'no'}**; "
            f"with every interval above 0: "
            f"**{'yes' if verdict['beats_all_clearly'] else 'no'}**."
            + (f" Not beaten on the mean: {', '.join(beaten)}." if beaten else ""),
            "",
        ]
    return lines


def blind_markdown(results: Mapping[str, Any]) -> str:
    """The section on dataset-blind rankings and the default selector (markdown)."""
    res = _evaluated(results)
    lines = [
        "## Dataset-blind baselines and the default selector",
        "",
        "Rows `blind:*` never look at the target data: `blind:static` ranks each member by "
        "its mean fine-tuned accuracy on the OTHER tasks in the same regime (leave one "
        "target out), `blind:source_acc` by its accuracy on its own source domain, "
        "`blind:params` by its parameter count. A zoo has a quality order of its own, so "
        "a score's Spearman says little until it beats `blind:static`; trials to best and "
        "top-1 regret say whether it finds the best member of this target.",
        "",
        *_margin_section(res),
        *_combination_section(res),
    ]
    return "\n".join(lines).rstrip() + "\n"


def _zoo_section(res: Mapping[str, Any]) -> list[str]:
    zoo = res.get("zoo") or []
    lines: list[str] = []
    if zoo:
        first = ["id", "arch", "source_domain", "init", "source_accuracy", "build_seconds"]
        extra = sorted({k for z in zoo for k in z} - set(first))
        keys = [k for k in first if any(k in z for z in zoo)] + extra
        rows = []
        for z in sorted(zoo, key=lambda z: str(z.get("id", ""))):
            row = []
            for k in keys:
                v = z.get(k)
                row.append(f"{v:.4g}" if isinstance(v, float) else "" if v is None else str(v))
            rows.append(row)
        lines += _table(keys, rows) + [""]
    else:
        lines += ["No zoo metadata in these results.", ""]
    build = res.get("build") or {}
    if build:
        rows = [
            [k, _fmt(v, "trials_to_best") if isinstance(v, (int, float)) else str(v)]
            for k, v in sorted(build.items())
        ]
        lines += ["Build times:", "", *_table(["Stage", "Seconds"], rows), ""]
    return lines


def render_markdown(results: Mapping[str, Any], figures: Sequence[str] = (), note: str = "") -> str:
    """The whole ``report.md`` text; ``figures`` are paths relative to the report."""
    res = _evaluated(results)
    s = res.get("settings", {})
    versions = check_versions(res)  # a recomputed default is derived: never stale here
    lines = ["# zoosel model-selection benchmark", ""]
    meta = res.get("meta") or {}
    for k in sorted(meta):
        lines.append(f"- {k}: {meta[k]}")
    lines += [
        f"- scorer versions: {_versions_line(versions)}"
        + (" The measured `consensus` column was an earlier default's: its rows are "
           "recomputed from the installed definition." if res.get("replaced_stale") else ""),
        f"- generalist: `{res.get('generalist')}`",
        f"- tasks: {', '.join(sorted(res['tasks']))}",
        f"- regimes: {', '.join(_regimes(res))}",
        f"- bootstrap: {s.get('n_resamples', '?')} resamples over tasks, seed "
        f"{s.get('seed', '?')}, level {s.get('level', '?')}; accuracy tolerance for "
        f"'best' {s.get('tol', '?')}",
        "",
        "## Headline",
        "",
        headline_markdown(res, versions.stale),
        blind_markdown(res),
        *_family_section(res),
        "## Metrics per regime",
        "",
        "Mean [bootstrap 95% interval] over tasks. Gains, oracle gain and regret in accuracy "
        "points; relative cost = scoring seconds / one fine-tuning's seconds.",
        "",
    ]
    for regime in _regimes(res):
        if regime in res["aggregates"]:
            lines += _regime_section(res, regime, versions.stale)
    lines += ["## Per task", ""]
    for regime in _regimes(res):
        for task in sorted(res["tasks"]):
            if regime in res["tasks"][task]:
                lines += _task_section(res, task, regime)
    lines += ["## Validity of the benchmark", "", *_validity_section(res)]
    lines += ["## linft: predicted fine-tuned accuracy", "", *_prediction_section(res)]
    lines += ["## Zoo", "", *_zoo_section(res)]
    lines += ["## Figures", ""]
    if note:
        lines += [note, ""]
    for f in figures:
        lines += [f"![{Path(f).stem}]({f})", ""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- figures


def _key_selectors(res: Mapping[str, Any], limit: int = 4) -> list[str]:
    chosen = [s for s in res.get("key_selectors") or [] if s in _scorers(res)]
    if chosen:
        return chosen
    regimes = _regimes(res)
    agg = res["aggregates"].get(regimes[0], {}) if regimes else {}

    def key(s: str) -> tuple[float, str]:
        v = _num(agg.get(s, {}).get("spearman", {}).get("mean"))
        return (-v if not math.isnan(v) else math.inf, s)

    return sorted(_scorers(res), key=key)[:limit]


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)  # the Agg canvas, without touching pyplot's global state
    return fig


def _scatter(res: Mapping[str, Any], regime: str, path: Path) -> bool:
    tasks = [t for t in sorted(res["tasks"]) if regime in res["tasks"][t]]
    selectors = _key_selectors(res)
    if not tasks or not selectors:
        return False
    gen = res.get("generalist")
    fig = _new_figure(2.8 * len(selectors) + 0.5, 2.4 * len(tasks) + 0.6)
    axes = fig.subplots(len(tasks), len(selectors), squeeze=False)
    for i, task in enumerate(tasks):
        entry = res["tasks"][task][regime]
        acc = entry["accuracy"]
        for j, s in enumerate(selectors):
            ax = axes[i][j]
            score = (entry.get("scores") or {}).get(s, {})
            pts = sorted(
                (m, _num(score.get(m)), 100 * acc[m])
                for m in acc
                if math.isfinite(_num(score.get(m)))
            )
            ax.scatter([p[1] for p in pts], [p[2] for p in pts], s=14, color="tab:blue")
            g = [p for p in pts if p[0] == gen]
            if g:
                ax.scatter([g[0][1]], [g[0][2]], s=40, marker="*", color="tab:red")
            rho = _num((entry.get("metrics") or {}).get(s, {}).get("spearman"))
            ax.set_title(f"{task} | {s}  rho={_fmt(rho)}", fontsize=8)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel("fine-tuned acc. (%)", fontsize=7)
            if i == len(tasks) - 1:
                ax.set_xlabel("score", fontsize=7)
    fig.suptitle(f"Score vs fine-tuned accuracy, {regime} (star: generalist)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))  # keep the first row clear of the title
    fig.savefig(path, format="png", metadata={"Software": None})
    return True


def _bars(res: Mapping[str, Any], metric: str, path: Path) -> bool:
    scorers = _scorers(res)
    regimes = [r for r in _regimes(res) if r in res["aggregates"]]
    if not scorers or not regimes:
        return False
    # about 0.15 inch per bar, capped so that a large zoo of selectors stays readable
    fig = _new_figure(min(16.0, max(5.0, 0.15 * len(scorers) * max(1, len(regimes)) + 2)), 4.2)
    ax = fig.subplots()
    width = 0.8 / len(regimes)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for k, regime in enumerate(regimes):
        color = colors[k % len(colors)]
        xs, ys, lo, hi = [], [], [], []
        for i, s in enumerate(scorers):
            cell = res["aggregates"][regime].get(s, {}).get(metric, {})
            mean = _num(cell.get("mean"))
            if math.isnan(mean):
                continue
            xs.append(i + (k - (len(regimes) - 1) / 2) * width)
            ys.append(mean)
            lo.append(max(0.0, mean - _num(cell.get("ci_low"))))
            hi.append(max(0.0, _num(cell.get("ci_high")) - mean))
        ax.bar(xs, ys, width=width, color=color, label=regime)
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="none", ecolor="black", capsize=2, lw=0.8)
        if metric in ("top1_gain", "top3_gain"):
            oracle = _num((_oracle(res, regime) or {}).get("mean"))
            if not math.isnan(oracle):
                ax.axhline(oracle, color=color, ls="--", lw=0.8)
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.set_xticks(range(len(scorers)))
    ax.set_xticklabels(scorers, rotation=30, ha="right", fontsize=8)
    title = LABELS.get(metric, metric)
    if metric in ("top1_gain", "top3_gain"):
        title += " (points; dashed: oracle)"
    ax.set_title(f"{title}, mean over tasks with 95% CI", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    return True


def write_figures(results: Mapping[str, Any], fig_dir: Path) -> list[Path] | None:
    """Draw the scatter small multiples and per-metric bar charts; None without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    res = _evaluated(results)
    fig_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for regime in _regimes(res):
        path = fig_dir / f"scatter_{_safe(regime)}.png"
        if _scatter(res, regime, path):
            written.append(path)
    for metric in METRICS:
        if metric == "oracle_gain":  # the same for every selector; drawn as lines instead
            continue
        path = fig_dir / f"bar_{metric}.png"
        if _bars(res, metric, path):
            written.append(path)
    return written


# --------------------------------------------------------------------------- entry point


def write_report(results: dict, out_dir: Path) -> dict[str, Path]:
    """Write ``report.md``, ``results.json`` and ``figures/*.png`` under ``out_dir``.

    Returns file name (``"report.md"``, ``"results.json"``, ``"figures/bar_spearman.png"``,
    ...) -> path. Without matplotlib the figures are skipped and the report says so.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = _jsonable(_evaluated(results))
    paths: dict[str, Path] = {}
    figures = write_figures(res, out_dir / "figures")
    note = _NO_PLOTS if figures is None else ""
    rel = [p.relative_to(out_dir).as_posix() for p in figures or []]
    for name, p in zip(rel, figures or [], strict=True):
        paths[name] = p
    report = out_dir / "report.md"
    report.write_text(render_markdown(res, rel, note), encoding="utf-8")
    data = out_dir / "results.json"
    text = json.dumps(res, indent=1, sort_keys=True, allow_nan=False)
    data.write_text(text + "\n", encoding="utf-8")
    paths["report.md"] = report
    paths["results.json"] = data
    return dict(sorted(paths.items()))


def rewrite_report(results_file: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """Evaluate a written ``results.json`` again with the current code (every derived
    number and row recomputed, with the bootstrap settings it records) and write the
    report to ``out_dir`` (default: the folder of ``results_file``). Needs no build."""
    path = Path(results_file)
    data = load_results(path)
    settings = data.get("settings") or {}
    keep = {k: settings[k] for k in ("n_resamples", "seed", "level", "tol") if k in settings}
    return write_report(evaluate_benchmark(data, **keep), Path(out_dir) if out_dir else path.parent)

