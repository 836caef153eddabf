"""Output formats for rankings: table, json, csv, markdown (each registered as a plugin)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zoosel.hookspecs import hookimpl
from zoosel.types import CandidateResult, Ranking


@dataclass(frozen=True)
class OutputFormat:
    """A way to render a :class:`Ranking` as text. ``suffixes`` pick it from ``--output``."""

    name: str
    render: Callable[[Ranking], str]
    suffixes: tuple[str, ...] = ()


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _params(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _rows(ranking: Ranking) -> tuple[list[str], list[list[str]]]:
    conf = ranking.confidence
    sure = ["P(best)", "rank(90%)"] if conf is not None else []
    header = ["rank", "candidate", *ranking.scorers, *sure, "params", "time"]
    rows = []
    for i, r in enumerate(ranking.results, 1):
        scores = [_num(r.scores.get(s)) for s in ranking.scorers]
        cached = " (cached)" if r.cached else ""
        time_cell = f"{r.seconds:.1f}s{cached}"
        cells = conf.cells(r.candidate) if conf is not None else []
        rows.append([str(i), r.candidate, *scores, *cells, _params(r.num_params), time_cell])
    return header, rows


def _notes(ranking: Ranking) -> list[str]:
    d = ranking.dataset
    lines = [
        f"dataset {d.name} [{d.split}]: {d.num_classes} classes, {d.num_samples} samples "
        f"(per class {d.per_class_text()}, seed {d.seed}); sorted by {ranking.primary}"
        " (higher is better)",
    ]
    if ranking.pool_relative:
        lines.append(
            f"pool-relative scores (depend on the other candidates): "
            f"{', '.join(ranking.pool_relative)}"
        )
    if ranking.scorer_options:
        lines.append("scorer options: " + ", ".join(
            f"{name}.{k}={v}" for name, values in ranking.scorer_options.items()
            for k, v in values.items()))
    lines += [f"note    {r.candidate}: {n}" for r in ranking.results for n in r.notes]
    lines += [f"failed  {r.candidate}: {r.error}" for r in ranking.failed]
    lines += [f"skipped {s.id}: {s.reason}" for s in ranking.skipped]
    if ranking.best is not None:
        from zoosel.agreement import notes

        lines += notes(ranking)
        if ranking.confidence is not None:
            lines += ranking.confidence.notes()
        lines.append(f"recommended: {ranking.best.candidate}")
    return lines


def render_table(ranking: Ranking) -> str:
    """Aligned plain-text table, then notes (dataset, failures, skips, recommendation)."""
    header, rows = _rows(ranking)
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]
    numeric = {0, *range(2, len(header))}

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in pairs).rstrip()

    out = [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    return "\n".join(out + [""] + _notes(ranking)) + "\n"


def render_markdown(ranking: Ranking) -> str:
    """GitHub-flavoured markdown table with the same notes as a list."""
    header, rows = _rows(ranking)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    out += ["", *(f"- {n}" for n in _notes(ranking))]
    return "\n".join(out) + "\n"


def render_json(ranking: Ranking) -> str:
    """Everything in :meth:`Ranking.to_dict`, NaN written as null."""

    def clean(obj: Any) -> Any:
        if isinstance(obj, float) and not math.isfinite(obj):
            return None
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [clean(v) for v in obj]
        return obj

    return json.dumps(clean(ranking.to_dict()), indent=2) + "\n"


def render_csv(ranking: Ranking) -> str:
    """One row per scored or failed candidate; full-precision scores."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    conf = ranking.confidence
    sure = ["p_best", "rank_low", "rank_high"] if conf is not None else []
    writer.writerow(["rank", "candidate", "source", *ranking.scorers, "params", "seconds",
                     "error", *sure])

    def row(rank: str, r: CandidateResult) -> list[Any]:
        scores = [r.scores.get(s, "") for s in ranking.scorers]
        extra = []
        if conf is not None:
            held = conf.row(r.candidate)
            extra = ["", "", ""] if held["p_best"] is None else [
                held["p_best"], *held["rank_interval"]]
        return [rank, r.candidate, r.source, *scores, r.num_params or "", f"{r.seconds:.3f}",
                r.error or "", *extra]

    for i, r in enumerate(ranking.results, 1):
        writer.writerow(row(str(i), r))
    for r in ranking.failed:
        writer.writerow(row("", r))
    return buf.getvalue()


@hookimpl
def register_formats(register: Callable[[OutputFormat], None]) -> None:
    register(OutputFormat("table", render_table, (".txt",)))
    register(OutputFormat("json", render_json, (".json",)))
    register(OutputFormat("csv", render_csv, (".csv",)))
    register(OutputFormat("markdown", render_markdown, (".md", ".markdown")))
