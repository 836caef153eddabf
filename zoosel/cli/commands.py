"""Built-in commands: select, list, score, scorers, sources, plugins, example."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from zoosel.cli import cli, friendly_errors
from zoosel.cli.options import (
    GroupedCommand,
    candidate_arguments,
    candidate_options,
    dataset_options,
    engine_options,
    quiet_option,
    rank_arguments,
    scorer_option,
    scorer_options,
    section,
)


def _write(text: str, output: str | None, fmt_name: str) -> None:
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {fmt_name} to {output}", err=True)
    else:
        click.echo(text, nl=False)


def _format_for(fmt: str | None, output: str | None) -> str:
    from zoosel.api import list_formats

    if fmt:
        return fmt
    if output:
        suffix = Path(output).suffix.lower()
        for name, f in list_formats().items():
            if suffix in f.suffixes:
                return name
    return "table"


@cli.command("select", cls=GroupedCommand)
@dataset_options
@candidate_options
@scorer_options
@section(
    "Output",
    click.option("--format", "fmt", help="table, json, csv, markdown (default: from --output, "
                                         "else table)."),
    click.option("--output", "-o", help="Write the ranking to this file."),
    click.option("--results", help="Append one JSON line per candidate here as each "
                                   "completes."),
)
@engine_options
@section(
    "Device and batching",
    click.option("--processes", type=int, default=1, show_default=True,
                 help="Run on this many processes on this machine (launches accelerate)."),
)
@section(
    "Ranking card",
    click.option("--card", "card", help="Write a ranking card (markdown with YAML front "
                                        "matter) here, and its JSON next to it."),
    click.option("--card-template", type=click.Path(exists=True, dir_okay=False),
                 help="string.Template file for the card's body (default: built in)."),
    click.option("--push-to-hub", is_flag=True,
                 help="Upload the card and its JSON to the dataset's Hub repository, as a pull "
                      "request (the token comes from HF_TOKEN or `hf auth login`)."),
    click.option("--card-repo", help="Hub dataset repository to push the card to (default: "
                                     "--dataset when it is a Hub id)."),
    click.option("--no-pr", is_flag=True, help="With --push-to-hub: commit to the main branch "
                                               "instead of opening a pull request."),
    click.option("--card-metadata", is_flag=True,
                 help="With --push-to-hub: also set the `zoosel` key of the repository's "
                      "README.md metadata to a summary of the ranking, in the same commit."),
    click.option("--dry-run", is_flag=True, help="With --push-to-hub: print what would be "
                                                 "uploaded; upload nothing."),
)
@quiet_option
@friendly_errors
def select_cmd(fmt: str | None, output: str | None, results: str | None, processes: int,
               card: str | None, card_template: str | None, push_to_hub: bool,
               card_repo: str | None, no_pr: bool, card_metadata: bool, dry_run: bool,
               quiet: bool, **options: Any) -> None:
    """Rank candidate models for a dataset and print the ranking."""
    from zoosel.api import get_format, rank
    from zoosel.engine.distributed import Workers, launched, relaunch

    card_repo = _card_target(options["dataset"], card, card_template, push_to_hub, card_repo,
                             no_pr, dry_run, card_metadata)
    if processes > 1 and not launched():
        sys.exit(relaunch(processes, _without_processes(sys.argv[1:])))
    fmt_name = _format_for(fmt, output)
    renderer = get_format(fmt_name)
    ranking = rank(**rank_arguments(options), progress=not quiet, results_file=results)
    if Workers.current().is_main:
        _write(renderer.render(ranking), output, fmt_name)
        if card or push_to_hub:
            _card(ranking, card or DEFAULT_CARD, card_template, card_repo, no_pr, dry_run,
                  card_metadata)


DEFAULT_CARD = "ranking-card.md"


def _card_target(dataset: str, card: str | None, template: str | None, push: bool,
                 repo: str | None, no_pr: bool, dry_run: bool,
                 metadata: bool = False) -> str | None:
    """Check the card options before ranking; the repository to push to, if any."""
    from zoosel.cards import hub_dataset_id
    from zoosel.errors import UsageError

    if not push:
        given = [name for name, value in (("--card-repo", repo), ("--no-pr", no_pr),
                                          ("--card-metadata", metadata),
                                          ("--dry-run", dry_run)) if value]
        if given:
            raise UsageError(f"{', '.join(given)} only apply with --push-to-hub.")
        if template and not card:
            raise UsageError("--card-template needs --card PATH (or --push-to-hub).")
        return None
    if card and Path(card).suffix.lower() == ".json":
        raise UsageError(f"--card {card}: give the markdown path (.md); its JSON is written "
                         "next to it.")
    repo = repo or hub_dataset_id(dataset)
    if repo is None:
        raise UsageError(f"--push-to-hub: {dataset!r} is not a Hub dataset id, so there is no "
                         "repository to push the card to; name one with --card-repo OWNER/NAME.")
    return repo


def _card(ranking: Any, card: str, template: str | None, repo: str | None, no_pr: bool,
          dry_run: bool, metadata: bool = False) -> None:
    from zoosel.cards import write_card
    from zoosel.cli.card_commands import upload_card

    md, data = write_card(ranking, card, Path(template) if template else None)
    click.echo(f"wrote the ranking card to {md} and {data}", err=True)
    if repo is not None:
        upload_card(str(md), repo, no_pr=no_pr, dry_run=dry_run, metadata=metadata)


def _without_processes(argv: list[str]) -> list[str]:
    """``argv`` without ``--processes N`` / ``--processes=N``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            out.append(arg)
    return out


@cli.command("list", cls=GroupedCommand)
@candidate_options
@section(
    "Output",
    click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
                 show_default=True),
    click.option("--cache-dir", help="zoosel's cache folder, where Hub listings are kept "
                                     "(default: $ZOOSEL_CACHE or ~/.cache/zoosel)."),
)
@friendly_errors
def list_cmd(fmt: str, cache_dir: str | None, **options: Any) -> None:
    """Show the candidates a select with these options would rank, without scoring them."""
    import json

    from zoosel.api import list_models, list_request, why_no_candidates

    arguments = candidate_arguments(options)
    listing = list_models(**arguments, cache_dir=cache_dir)
    if fmt == "json":
        click.echo(json.dumps(listing.to_dict(), indent=2))
        return
    click.echo(_listing_table(listing), nl=False)
    if not listing.candidates:
        models = arguments.pop("models")
        request = list_request(**arguments, cache_dir=cache_dir)
        click.echo(why_no_candidates(request, models, [], []), err=True)


def _listing_table(listing: Any) -> str:
    from zoosel.sources.hub_listing import format_count

    header = ("candidate", "source", "library", "pipeline tag", "params", "revision")
    rows = [header] + [
        (f"{r['source']}:{r['ref']}", r["source"], r["library"] or "?",
         r["pipeline_tag"] or "-", format_count(r["params"]), (r["revision"] or "-")[:12])
        for r in listing.rows()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    for r in listing.rows():
        lines += [f"note {r['source']}:{r['ref']}: {note}" for note in r["notes"]]
    lines += [f"skipped {s.id}: {s.reason}" for s in listing.skipped]
    lines += [f"failed {f.candidate}: {f.error}" for f in listing.failed]
    lines.append(f"{len(listing.candidates)} candidates, {len(listing.skipped)} skipped, "
                 f"{len(listing.failed)} failed")
    return "\n".join(lines) + "\n"


@cli.command("score")
@click.option("--features", "features_file", required=True, type=click.Path(exists=True),
              help=".npz with 'features' (N, D), and optionally 'labels' and 'source_probs'; "
                   "or a .npy of features.")
@click.option("--labels", "labels_file", type=click.Path(exists=True),
              help=".npy or text file (one label per line); default: 'labels' in the .npz.")
@click.option("--scorer", "-s", "scorers", multiple=True, help="Scorer (repeatable, 'all').")
@scorer_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@friendly_errors
def score_cmd(features_file: str, labels_file: str | None, scorers: tuple[str, ...],
              scorer_option: dict[str, dict[str, str]], fmt: str) -> None:
    """Score features you already have, with no model at all."""
    import json

    import numpy as np

    from zoosel.api import score
    from zoosel.errors import UsageError

    arrays: dict = {}
    if features_file.endswith(".npz"):
        with np.load(features_file, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    else:
        arrays["features"] = np.load(features_file, allow_pickle=False)
    if labels_file:
        labels = (np.load(labels_file, allow_pickle=False) if labels_file.endswith(".npy")
                  else np.array(Path(labels_file).read_text().split()))
    elif "labels" in arrays:
        labels = arrays["labels"]
    else:
        raise UsageError(f"{features_file} has no 'labels' array; pass --labels FILE.")
    values = score(arrays.get("features"), labels, source_probs=arrays.get("source_probs"),
                   scorers=scorers or None, scorer_options=scorer_option or None)
    if fmt == "json":
        click.echo(json.dumps(values, indent=2))
    else:
        width = max(map(len, values))
        for name, value in values.items():
            click.echo(f"{name.ljust(width)}  {value:.6f}")


@cli.command("scorers")
@friendly_errors
def scorers_cmd() -> None:
    """List the available scorers and what each needs."""
    from zoosel.api import DEFAULT_SCORERS, iter_scorer_rows, list_scorers

    rows = iter_scorer_rows(sorted(list_scorers().values(), key=lambda s: s.name))
    width = max(len(r["name"]) for r in rows)
    needs_width = max(len(r["needs"]) for r in rows)
    for r in rows:
        default = "*" if r["name"] in DEFAULT_SCORERS else " "
        pool = " [pool-relative]" if r["pool"] else ""
        options = f" Options (--scorer-option): {r['options']}." if r["options"] else ""
        click.echo(f"{default} {r['name'].ljust(width)}  {r['needs'].ljust(needs_width)}  "
                   f"{r['summary']}{pool}{options}")
    click.echo("\n* default set. Every score is reported so that higher is better.")


@cli.command("sources")
@friendly_errors
def sources_cmd() -> None:
    """List the model sources (the SOURCE in --model SOURCE:REF)."""
    from zoosel.api import list_sources

    sources = list_sources()
    width = max(map(len, sources))
    for name, source in sorted(sources.items()):
        click.echo(f"{name.ljust(width)}  {source.summary}")


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def plugins_cmd(as_json: bool) -> None:
    """List the loaded plugins, with their package, version and hooks."""
    import json
    from dataclasses import asdict

    from zoosel.plugins import plugin_infos

    infos = plugin_infos()
    if as_json:
        click.echo(json.dumps([asdict(i) for i in infos], indent=2))
        return
    width = max(len(i.name) for i in infos)
    origins = [f"{i.package} {i.version}" if i.package else "(not installed)" for i in infos]
    origin_width = max(map(len, origins))
    for i, origin in zip(infos, origins, strict=True):
        kind = "built-in" if i.builtin else "plugin"
        click.echo(f"{i.name.ljust(width)}  {kind:<8}  {origin.ljust(origin_width)}  "
                   f"{', '.join(i.hooks)}")


@cli.command("example")
@click.option("--dir", "directory", default="zoosel-example", show_default=True,
              help="Where to build the example zoo and dataset.")
@click.option("--quiet", "-q", is_flag=True)
@friendly_errors
def example_cmd(directory: str, quiet: bool) -> None:
    """Build a tiny offline zoo and image dataset, then rank the zoo for it."""
    from zoosel.api import rank
    from zoosel.example import build_example
    from zoosel.formats import render_table

    zoo, data = build_example(Path(directory), progress=not quiet)
    ranking = rank(str(data), local_dirs=[str(zoo)], cache_dir=Path(directory) / "cache",
                   progress=not quiet)
    click.echo(render_table(ranking), nl=False)
    click.echo(f"\nSame thing by hand: zoosel select --dataset {data} --local-dir {zoo}",
               err=True)
