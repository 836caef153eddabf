"""``zoosel recommend``: rank the zoo in a CI pipeline and check the model a project uses.

The command ranks candidates exactly as ``zoosel select`` does (same options), then:

- prints the recommended backbone (the best candidate by the policy score) on stdout,
  one line, nothing else;
- explains the decision on stderr;
- with ``--current NAME`` (or ``--current-from FILE``), compares the model the project
  uses now with the best one, and fails when it is more than ``--margin`` below it;
- with ``--fail-only-if-confident P``, fails only when, besides, the current model scores
  below the recommended one in at least a fraction P of the confidence resamples
  (``--confidence``, see :mod:`zoosel.confidence`);
- writes a JSON report (``--json FILE``) and a markdown job summary (``--summary FILE``,
  by default ``$GITHUB_STEP_SUMMARY`` when that variable is set, appended to).

The policy score is ``--score NAME`` (default: the ranking's primary scorer, i.e.
``--sort-by`` or the first ``--scorer``). The margin is an absolute difference in that
score's own units (every score is "higher is better"): LFC is a correlation in
[-1, 1], LogME a log evidence per sample, LEEP and NCE log-likelihoods per sample in
nats, pool-relative scores such as ``rankagg`` lie in [0, 1].

Exit codes (:data:`EXIT_CODES`): 0 pass, 1 policy failure, 2 usage or input error,
3 internal error (a bug, as for every zoosel command), 4 the current model is not
among the candidates or could not be scored, 5 no candidate could be scored.

The current model is matched against the candidate ids, trying in turn: the exact id
(``local:/abs/path@1a2b3c4d5e6f``); the id with a revision prefix or without its
revision, with or without the source prefix (``hf:org/name``, ``org/name``, a local
path); the last path segment of the reference (``name``); a substring of the id. The
first rule that matches decides; two or more matches under it is a usage error.

The file of ``--current-from`` is JSON (``.json``), TOML (``.toml``) or YAML (any other
suffix); ``--current-key`` (default ``backbone``, dots for nesting as in
``model.backbone``) names the entry holding the model name.

The feature cache (``--cache-dir``) is what makes a rerun cheap: a rerun on an unchanged
dataset and zoo runs no model. In CI, persist that folder between runs (``actions/cache``);
see ``examples/ci.md``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from zoosel.cli import friendly_errors
from zoosel.cli.options import (
    GroupedCommand,
    candidate_options,
    dataset_options,
    engine_options,
    quiet_option,
    rank_arguments,
    scorer_options,
)
from zoosel.errors import NoResultsError, UsageError
from zoosel.hookspecs import hookimpl

if TYPE_CHECKING:
    from zoosel.types import CandidateResult, Ranking

EXIT_PASS = 0
EXIT_POLICY = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_CURRENT = 4
EXIT_NO_RESULTS = 5

EXIT_CODES: dict[int, str] = {
    EXIT_PASS: "pass: no current model given, or it is within the margin of the best",
    EXIT_POLICY: "policy failure: the current model is more than the margin below the best",
    EXIT_USAGE: "usage or input error (bad option, unreadable dataset or config, "
                "ambiguous --current)",
    EXIT_INTERNAL: "internal error in zoosel or a plugin",
    EXIT_CURRENT: "the current model is not among the candidates, or could not be scored",
    EXIT_NO_RESULTS: "no candidate could be scored",
}

DEFAULT_CURRENT_KEY = "backbone"


@dataclass
class Verdict:
    """The outcome of the policy check, as the JSON report and the summary show it."""

    status: str
    """``pass``, ``fail``, ``current-not-found``, ``current-not-scored`` or ``no-results``."""
    exit_code: int
    score: str
    margin: float
    recommended: str | None = None
    best_score: float | None = None
    candidates: int = 0
    current_query: str | None = None
    current: str | None = None
    current_score: float | None = None
    current_rank: int | None = None
    gap: float | None = None
    """``best_score - current_score`` (never negative)."""
    p_worse: float | None = None
    """Share of the confidence resamples in which the current model scores below the
    recommended one (None: no confidence computed, or the current model not assessed)."""
    fail_only_if_confident: float | None = None
    indistinguishable: str | None = None
    """The confidence note when the top candidates cannot be told apart."""
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the current model ---------------------------------------------------------------------


def read_current_from(path: str | Path, key: str = DEFAULT_CURRENT_KEY) -> str:
    """The model name stored under ``key`` (dotted for nesting) in a JSON, TOML or YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--current-from {path}: cannot read it: {exc}") from exc
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = _toml_loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except UsageError:
        raise
    except Exception as exc:
        kind = {".json": "JSON", ".toml": "TOML"}.get(suffix, "YAML")
        raise UsageError(f"--current-from {path}: not valid {kind}: {exc}") from exc
    value: Any = data
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise UsageError(f"--current-from {path}: no entry {key!r} (set --current-key "
                             "to the entry that names the model).")
        value = value[part]
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"--current-from {path}: {key!r} is {value!r}, not a model name.")
    return value.strip()


def _toml_loads(text: str) -> Any:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise UsageError("reading TOML needs Python 3.11, or the tomli package; "
                             "use a JSON or YAML file.") from None
    return tomllib.loads(text)


def _split_id(candidate_id: str) -> tuple[str, str, str]:
    """``(source, ref without revision, revision)`` of a candidate id."""
    source, sep, ref = candidate_id.partition(":")
    if not sep:
        source, ref = "", candidate_id
    unpinned, at, revision = ref.rpartition("@")
    if not at:
        unpinned, revision = ref, ""
    return source, unpinned, revision


def _rule_id(query: str, cid: str) -> bool:
    return query == cid


def _rule_unpinned(query: str, cid: str) -> bool:
    source, unpinned, revision = _split_id(cid)
    forms = {unpinned, f"{source}:{unpinned}"}
    if query in forms:
        return True
    path = Path(query).expanduser()
    if path.exists() and str(path.resolve()) == unpinned:
        return True
    base, at, wanted = query.rpartition("@")
    if at and wanted and revision and (base in forms or (
            Path(base).expanduser().exists()
            and str(Path(base).expanduser().resolve()) == unpinned)):
        return revision.startswith(wanted) or wanted.startswith(revision)
    return False


def _rule_name(query: str, cid: str) -> bool:
    return query == _split_id(cid)[1].rstrip("/").rsplit("/", 1)[-1]


def _rule_substring(query: str, cid: str) -> bool:
    return query in cid


_RULES: tuple[tuple[str, Callable[[str, str], bool]], ...] = (
    ("exact id", _rule_id),
    ("id without revision", _rule_unpinned),
    ("name", _rule_name),
    ("substring", _rule_substring),
)


def match_candidate(query: str, candidate_ids: Sequence[str]) -> str | None:
    """The candidate id ``query`` names, or None; raises :class:`UsageError` when ambiguous.

    Rules, in order (the first that matches anything decides): the exact id; the id
    without its revision or with a revision prefix, with or without the source prefix,
    or an existing local path; the last path segment of the reference; a substring.
    """
    query = query.strip()
    if not query:
        raise UsageError("--current is empty.")
    ids = list(dict.fromkeys(candidate_ids))
    for rule, test in _RULES:
        hits = [cid for cid in ids if test(query, cid)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            listed = "\n".join(f"  {h}" for h in hits)
            raise UsageError(f"--current {query!r} is ambiguous ({rule}); it matches:\n{listed}\n"
                             "Give more of the candidate id.")
    return None


# --- the policy ----------------------------------------------------------------------------


def _value(result: CandidateResult, score: str) -> float | None:
    value = result.scores.get(score)
    return value if value is not None and math.isfinite(value) else None


def best_by(ranking: Ranking, score: str) -> CandidateResult | None:
    """The candidate with the highest finite ``score`` (the first of equals), or None."""
    best: CandidateResult | None = None
    best_value = -math.inf
    for result in ranking.results:
        value = _value(result, score)
        if value is not None and (best is None or value > best_value):
            best, best_value = result, value
    return best


def evaluate(ranking: Ranking, score: str, margin: float, current: str | None = None,
             fail_only_if_confident: float | None = None) -> Verdict:
    """Apply the policy: the current model may be at most ``margin`` below the best; with
    ``fail_only_if_confident`` P, a larger gap fails only when the current model is below
    the best in at least a fraction P of the ranking's confidence resamples."""
    values = [v for v in (_value(r, score) for r in ranking.results) if v is not None]
    verdict = Verdict(status="pass", exit_code=EXIT_PASS, score=score, margin=margin,
                      candidates=len(ranking.results) + len(ranking.failed),
                      current_query=current, fail_only_if_confident=fail_only_if_confident)
    best = best_by(ranking, score)
    if best is None:
        verdict.status, verdict.exit_code = "no-results", EXIT_NO_RESULTS
        verdict.message = f"no candidate has a {score} score."
        return verdict
    verdict.recommended, verdict.best_score = best.candidate, _value(best, score)
    if ranking.confidence is not None and ranking.confidence.indistinguishable():
        verdict.indistinguishable = ranking.confidence.indistinguishable_text()
    if current is None:
        verdict.message = "no current model given (--current): nothing to check."
        return verdict
    results = {r.candidate: r for r in ranking.results}
    failed = {r.candidate: r.error or "failed" for r in ranking.failed}
    skipped = {s.id: s.reason for s in ranking.skipped}
    match = match_candidate(current, [*results, *failed, *skipped])
    verdict.current = match
    if match is None:
        verdict.status, verdict.exit_code = "current-not-found", EXIT_CURRENT
        verdict.message = (
            f"the current model {current!r} is none of the {len(results) + len(failed)} "
            "candidates; add it with --model SOURCE:REF, or fix --current.")
        return verdict
    if match in failed or match in skipped:
        verdict.status, verdict.exit_code = "current-not-scored", EXIT_CURRENT
        verdict.message = (f"the current model {match} could not be scored: "
                           f"{failed.get(match) or skipped.get(match)}")
        return verdict
    value = _value(results[match], score)
    if value is None:
        verdict.status, verdict.exit_code = "current-not-scored", EXIT_CURRENT
        verdict.message = f"the current model {match} has no {score} score."
        return verdict
    assert verdict.best_score is not None
    verdict.current_score = value
    verdict.current_rank = 1 + sum(v > value for v in values)
    verdict.gap = max(verdict.best_score - value, 0.0)
    conf = ranking.confidence
    if (conf is not None and conf.score == score and conf.values is not None
            and match in conf.candidates and best.candidate in conf.candidates):
        verdict.p_worse = 0.0 if match == best.candidate else conf.p_beats(best.candidate, match)
    unsure = (fail_only_if_confident is not None and verdict.p_worse is not None
              and verdict.p_worse < fail_only_if_confident)
    if verdict.gap > margin and unsure:
        assert verdict.p_worse is not None and fail_only_if_confident is not None
        verdict.message = (f"the current model is {verdict.gap:.4f} below the best by {score}, "
                           f"more than the margin {margin:g}, but it scores below "
                           f"{best.candidate} in only {verdict.p_worse:.0%} of the resamples "
                           f"(fails from {fail_only_if_confident:.0%}): not confidently worse.")
    elif verdict.gap > margin:
        verdict.status, verdict.exit_code = "fail", EXIT_POLICY
        verdict.message = (f"the current model is {verdict.gap:.4f} below the best by {score}, "
                           f"more than the margin {margin:g}; consider {best.candidate}.")
    elif match == best.candidate:
        verdict.message = f"the current model is the best by {score}."
    else:
        verdict.message = (f"the current model is {verdict.gap:.4f} below the best by {score}, "
                           f"within the margin {margin:g}.")
    return verdict


def recommend(
    rank_kwargs: Mapping[str, Any],
    *,
    current: str | None = None,
    score: str | None = None,
    margin: float = 0.0,
    progress: bool = True,
    fail_only_if_confident: float | None = None,
) -> tuple[Ranking | None, Verdict]:
    """Rank with :func:`zoosel.api.rank` (``rank_kwargs``) and apply the policy.

    ``score`` is added to the scorers when missing and, unless ``sort_by`` is given,
    orders the ranking. Returns the ranking (None when nothing could be scored and
    no ranking exists) and the verdict.
    """
    from zoosel.api import DEFAULT_SCORERS, list_scorers, rank

    if margin < 0 or not math.isfinite(margin):
        raise UsageError(f"--margin must be a finite number >= 0, not {margin}.")
    kwargs = dict(rank_kwargs)
    if fail_only_if_confident is not None:
        if not 0.0 < fail_only_if_confident <= 1.0:
            raise UsageError("--fail-only-if-confident must be a probability in (0, 1], "
                             f"not {fail_only_if_confident}.")
        from zoosel.confidence import default_replicates

        asked = kwargs.get("confidence")
        if (default_replicates() if asked is None else asked) == 0:
            raise UsageError("--fail-only-if-confident needs the confidence resamples; "
                             "set --confidence to a number of resamples, not 0.")
        if score is not None and kwargs.get("sort_by") not in (None, score):
            raise UsageError("--fail-only-if-confident: the confidence resamples re-score "
                             f"the sort score ({kwargs['sort_by']}), not --score {score}; "
                             "drop --sort-by or make it the same.")
    if score is not None:
        scorers = list(kwargs.get("scorers") or ())
        if not scorers:
            available = list_scorers()
            scorers = [n for n in DEFAULT_SCORERS if n in available]
        if score not in scorers and "all" not in scorers:
            scorers.append(score)
        kwargs["scorers"] = scorers
        if not kwargs.get("sort_by"):
            kwargs["sort_by"] = score
    try:
        ranking = rank(**kwargs, progress=progress)
    except NoResultsError as exc:
        failed_ranking: Ranking | None = exc.ranking  # type: ignore[assignment]
        name = score or (failed_ranking.primary if failed_ranking is not None else "?")
        verdict = Verdict(status="no-results", exit_code=EXIT_NO_RESULTS, score=name,
                          margin=margin, current_query=current, message=str(exc))
        if failed_ranking is not None:
            verdict.candidates = len(failed_ranking.failed)
        return failed_ranking, verdict
    return ranking, evaluate(ranking, score or ranking.primary, margin, current,
                             fail_only_if_confident)


# --- reports -------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def explain(verdict: Verdict) -> str:
    """The human explanation printed on stderr."""
    lines = []
    if verdict.recommended is not None:
        lines.append(f"recommended: {verdict.recommended} ({verdict.score} "
                     f"{_num(verdict.best_score)}, best of {verdict.candidates} candidates)")
    if verdict.current is not None and verdict.current_score is not None:
        lines.append(f"current:     {verdict.current} ({verdict.score} "
                     f"{_num(verdict.current_score)}, rank {verdict.current_rank}, "
                     f"{_num(verdict.gap)} below the best)")
        lines.append(f"policy:      fail when more than {verdict.margin:g} below the best "
                     f"(in {verdict.score} units, higher is better)"
                     + (f" and below it in at least {verdict.fail_only_if_confident:.0%} of "
                        "the resamples" if verdict.fail_only_if_confident is not None else ""))
        if verdict.p_worse is not None and verdict.current != verdict.recommended:
            lines.append(f"confidence:  the current model scores below the recommended one "
                         f"in {verdict.p_worse:.0%} of the resamples")
    if verdict.indistinguishable:
        lines.append(f"note:        {verdict.indistinguishable}")
    label = {"pass": "PASS", "fail": "FAIL"}.get(verdict.status, "ERROR")
    lines.append(f"{label} (exit {verdict.exit_code}): {verdict.message}")
    return "\n".join(lines)


def summary_markdown(verdict: Verdict, ranking: Ranking | None) -> str:
    """A GitHub job summary: the verdict, the two models compared, the full ranking."""
    from zoosel.formats import render_markdown

    title = {"pass": "PASS", "fail": "FAIL"}.get(verdict.status, verdict.status)
    out = [f"## zoosel recommend: {title}", ""]
    if verdict.recommended is not None:
        out += [f"| | candidate | {verdict.score} | rank |", "|---|---|---|---|",
                f"| recommended | `{verdict.recommended}` | {_num(verdict.best_score)} | 1 |"]
        if verdict.current is not None and verdict.current_score is not None:
            out.append(f"| current | `{verdict.current}` | {_num(verdict.current_score)} | "
                       f"{verdict.current_rank} |")
        out.append("")
    if verdict.current_query is not None:
        out.append(f"Policy: fail when the current model is more than **{verdict.margin:g}** "
                   f"below the best by `{verdict.score}` (higher is better)"
                   + (f" and below it in at least **{verdict.fail_only_if_confident:.0%}** of "
                      "the confidence resamples" if verdict.fail_only_if_confident is not None
                      else "") + ".")
        if verdict.p_worse is not None and verdict.current != verdict.recommended:
            out.append(f"The current model scores below the recommended one in "
                       f"{verdict.p_worse:.0%} of the resamples.")
        out.append("")
    if verdict.indistinguishable:
        out += [f"Note: {verdict.indistinguishable}.", ""]
    out += [f"{verdict.message} (exit code {verdict.exit_code})", ""]
    if ranking is not None:
        out += ["<details><summary>Full ranking</summary>", "", render_markdown(ranking).rstrip(),
                "", "</details>", ""]
    return "\n".join(out) + "\n"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def report_json(verdict: Verdict, ranking: Ranking | None) -> str:
    """The ``--json`` report: the verdict's fields plus the full ranking."""
    data = {**verdict.to_dict(), "exit_codes": {str(k): v for k, v in EXIT_CODES.items()},
            "ranking": ranking.to_dict() if ranking is not None else None}
    return json.dumps(_finite(data), indent=2) + "\n"


# --- the command ---------------------------------------------------------------------------


@click.command("recommend", cls=GroupedCommand)
@dataset_options
@candidate_options
@scorer_options
@click.option("--current", help="The model the project uses now: a candidate id, the id "
                                "without revision, its name, or a unique substring.")
@click.option("--current-from", type=click.Path(dir_okay=False),
              help="Read the current model from this JSON, TOML or YAML file.")
@click.option("--current-key", default=DEFAULT_CURRENT_KEY, show_default=True,
              help="Entry of --current-from naming the model (dots for nesting).")
@click.option("--score", help="Scorer the policy uses (default: the ranking's primary).")
@click.option("--margin", type=float, default=0.0, show_default=True,
              help="Fail when the current model's score is more than this below the best, "
                   "in the score's own units (an absolute difference).")
@click.option("--fail-only-if-confident", type=float, metavar="P",
              help="Fail only when the current model also scores below the recommended one "
                   "in at least a fraction P of the --confidence resamples (e.g. 0.9).")
@click.option("--json", "json_file", type=click.Path(dir_okay=False),
              help="Write the verdict and the full ranking as JSON here.")
@click.option("--summary", "summary_file", type=click.Path(dir_okay=False),
              envvar="GITHUB_STEP_SUMMARY", show_envvar=True,
              help="Append a markdown summary here (default: $GITHUB_STEP_SUMMARY if set).")
@engine_options
@quiet_option
@friendly_errors
def recommend_cmd(current: str | None, current_from: str | None, current_key: str,
                  score: str | None, margin: float, fail_only_if_confident: float | None,
                  json_file: str | None,
                  summary_file: str | None, quiet: bool, **options: Any) -> None:
    """Recommend a backbone and check the current one, for CI pipelines.

    Prints the recommended candidate id on stdout and the explanation on stderr.
    Exit codes: 0 pass, 1 policy failure (the current model is more than --margin
    below the best), 2 usage or input error, 3 internal error, 4 current model not
    among the candidates or not scored, 5 no candidate could be scored.

    In CI, persist --cache-dir between runs (actions/cache): a rerun on an unchanged
    dataset and zoo then runs no model.
    """
    if current and current_from:
        raise UsageError("give --current or --current-from, not both.")
    if current_from:
        current = read_current_from(current_from, current_key)
    ranking, verdict = recommend(rank_arguments(options), current=current, score=score,
                                 margin=margin, progress=not quiet,
                                 fail_only_if_confident=fail_only_if_confident)
    if json_file:
        Path(json_file).write_text(report_json(verdict, ranking), encoding="utf-8")
    if summary_file:
        with open(summary_file, "a", encoding="utf-8") as fh:
            fh.write(summary_markdown(verdict, ranking))
    if verdict.recommended is not None:
        click.echo(verdict.recommended)
    if verdict.status == "no-results" and ranking is not None and not quiet:
        from zoosel.formats import render_table

        click.echo(render_table(ranking), err=True, nl=False)
    click.echo(explain(verdict), err=True)
    if verdict.exit_code:
        sys.exit(verdict.exit_code)


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``zoosel recommend``."""
    cli.add_command(recommend_cmd)
