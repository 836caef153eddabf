"""``zoosel bench``: build, run and report the model-selection benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from zoosel.cli import cli, friendly_errors
from zoosel.cli.options import option_group

_bench_options = option_group([
    click.option("--dir", "root", default="zoosel-bench", show_default=True,
                 type=click.Path(file_okay=False),
                 help="Folder of the build (data, zoo, ground truth, scores, report)."),
    click.option("--profile", default=None,
                 help="tiny, standard (default), full or diverse; see `zoosel bench profiles`."),
    click.option("--tiny", is_flag=True, help="Shorthand for --profile tiny."),
    click.option("--config", type=click.Path(dir_okay=False),
                 help="JSON config: profile overrides, `models` (a zoo of your own, "
                      "Hub-layout folders), `targets` (image folders or dataset ids)."),
    click.option("--target", "targets", multiple=True,
                 help="An image folder or dataset id to add as a target task (repeatable)."),
    click.option("--workers", type=int, default=None,
                 help="Processes for training, fine-tuning and scoring (one thread each; "
                      "default: the profile's)."),
    click.option("--device", default="auto", show_default=True,
                 help="Where to train, fine-tune and run the selectors' models: auto (a GPU "
                      "when one is visible), cpu, cuda, cuda:1..."),
    click.option("--quiet", is_flag=True, help="No progress bars or step messages."),
])


def _bench(root: str, profile: str | None, tiny: bool, config: str | None,
           targets: tuple[str, ...], workers: int | None, device: str, quiet: bool) -> Any:
    from zoosel.bench.profiles import load_config, resolve
    from zoosel.bench.run import Bench
    from zoosel.errors import UsageError

    settings = load_config(config) if config else {}
    if tiny and profile not in (None, "tiny"):
        raise UsageError("--tiny and --profile disagree; give one of them.")
    name = "tiny" if tiny else profile or settings.get("profile", "standard")
    overrides = dict(settings)
    if workers is not None:
        overrides["workers"] = workers
    return Bench(
        root=Path(root), profile=resolve(name, overrides),
        external_targets=[*settings.get("targets", []), *targets],
        builtin_targets=settings.get("builtin_targets", True),
        models=settings.get("models", []), generalist=settings.get("generalist"),
        progress=not quiet, log=(lambda msg: None) if quiet else
        (lambda msg: click.echo(msg, err=True)), device=device,
    )


@cli.group("bench")
def bench_group() -> None:
    """The model-selection benchmark: zoo, fine-tuning ground truth, selectors, report.

    Steps run separately or together and resume after an interruption:
    `zoosel bench run` does all of them.
    """


@bench_group.command("run")
@_bench_options
@click.option("--fresh", is_flag=True, help="Accept a folder built with other settings "
                                            "(finished work whose keys match is reused).")
@friendly_errors
def bench_run(fresh: bool, **kwargs: Any) -> None:
    """Every step: build the zoo, fine-tune, score, report."""
    paths = _bench(**kwargs).run(fresh=fresh)
    if paths:
        click.echo(f"report: {paths['report.md']}")


def _step(name: str, doc: str) -> None:
    @bench_group.command(name, help=doc)
    @_bench_options
    @friendly_errors
    def command(**kwargs: Any) -> None:
        paths = _bench(**kwargs).run(steps=[name])
        if paths:
            click.echo(f"report: {paths['report.md']}")


_step("zoo", "Train the zoo (source domains, generalist, Multi-BN).")
_step("finetune", "Fine-tune every zoo member on every target: the ground truth.")
_step("score", "Score the zoo on every target with every selector.")


@bench_group.command("report")
@_bench_options
@click.option("--from-results", "results_file", type=click.Path(dir_okay=False, exists=True),
              help="Report again from a written results.json (no build needed), into "
                   "--out or that file's folder.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder of the report (default: DIR/report, or that of --from-results).")
@friendly_errors
def bench_report(results_file: str | None, out: str | None, **kwargs: Any) -> None:
    """Compute the metrics and write report.md, results.json and plots."""
    if results_file:
        from zoosel.bench.report import rewrite_report

        paths = rewrite_report(Path(results_file), Path(out) if out else None)
    else:
        bench = _bench(**kwargs)
        bench.check_config()
        paths = bench.report(Path(out) if out else None)
    click.echo(f"report: {paths['report.md']}")


@bench_group.command("status")
@_bench_options
@friendly_errors
def bench_status(**kwargs: Any) -> None:
    """Show how far each step of the build in --dir is; runs nothing."""
    bench = _bench(**kwargs)
    if not bench.root.is_dir():
        click.echo(f"no build in {bench.root} yet: `zoosel bench run --dir {bench.root}` "
                   "starts one.")
        return
    for step, done, total, note in bench.status():
        mark = "done" if total and done == total else f"{total - done} to go"
        click.echo(f"{step:26s} {done:>5d} / {total:<5d} {mark:10s} {note}".rstrip())


@bench_group.command("verify")
@_bench_options
@click.option("--runs", default=20, show_default=True,
              help="Fine-tuning runs to redo, drawn at random from the build.")
@click.option("--members", default=1, show_default=True,
              help="Zoo members to retrain, drawn at random.")
@click.option("--member", "names", multiple=True,
              help="Retrain this member instead of a random one (repeatable).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random draws.")
@friendly_errors
def bench_verify(runs: int, members: int, names: tuple[str, ...], seed: int,
                 **kwargs: Any) -> None:
    """Redo a random sample of the build's work and check it gives the same results.

    Exits 1 when anything differs (on the device the work was recorded on, weights and
    accuracies must be identical)."""
    from zoosel.bench.verify import verify

    bench = _bench(**kwargs)
    if not (bench.root / "groundtruth.jsonl").is_file():
        raise click.UsageError(f"no fine-tuning results in {bench.root}: run `zoosel bench "
                               "run` first.")
    checks = verify(bench, runs=runs, members=members, seed=seed, names=names)
    for c in checks:
        click.echo(f"{'same' if c.ok else 'DIFFERS':8s} {c.kind:6s} {c.name}: {c.detail}")
    bad = [c for c in checks if not c.ok]
    click.echo(f"{len(checks) - len(bad)} of {len(checks)} redone pieces of work match.")
    if bad:
        raise SystemExit(1)


@bench_group.command("profiles")
def bench_profiles() -> None:
    """List the built-in profiles and their sizes."""
    from zoosel.bench.profiles import PROFILES

    for profile in PROFILES.values():
        regimes = ", ".join(profile.regimes)
        click.echo(f"{profile.name:9s} sources {len(profile.sources or ()) or 'all'}, "
                   f"targets {len(profile.targets or ()) or 'all'}, archs "
                   f"{'+'.join(profile.archs)}, regimes {regimes}, lrs "
                   f"{'/'.join(map(str, profile.lrs))}, workers {profile.workers}")


def _named_path(value: str) -> tuple[str | None, Path]:
    name, sep, path = value.partition("=")
    return (name, Path(path)) if sep and name and "/" not in name else (None, Path(value))


@bench_group.command("fit")
@click.option("--results", "results", multiple=True, required=True, metavar="[NAME=]PATH",
              help="A build's results.json (repeatable); NAME defaults to its profile.")
@click.option("--exclude", multiple=True, metavar="BUILD:SCORE",
              help="Leave a score out of one build's pairs (repeatable). Stale scores (a "
                   "recorded scorer version that is not the installed one) are left out "
                   "without it.")
@click.option("--pool", "pools", multiple=True, metavar="POOL",
              help="Scores the search may combine: features, features+grad, or names "
                   "separated by commas (repeatable; default: features and features+grad).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write report.md and fit.json there (default: print the report).")
@click.option("--resamples", default=2000, show_default=True, type=click.IntRange(min=1),
              help="Bootstrap resamples.")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap.")
@friendly_errors
def bench_fit(results: tuple[str, ...], exclude: tuple[str, ...], pools: tuple[str, ...],
              out: str | None, resamples: int, seed: int) -> None:
    """Fit the default selector on several builds at once, leaving each task out of every
    build together, and report its rows next to every single score."""
    import shlex

    from zoosel.bench import joint
    from zoosel.errors import UsageError

    excluded: dict[str, list[str]] = {}
    for item in exclude:
        build, sep, score = item.partition(":")
        if not (sep and build and score):
            raise UsageError(f"--exclude {item!r}: expected BUILD:SCORE, e.g. standard:nleep.")
        excluded.setdefault(build, []).append(score)
    builds = joint.load_builds([_named_path(v) for v in results], excluded)
    record = joint.fit_builds(builds, pools or joint.DEFAULT_POOLS, n_resamples=resamples,
                              seed=seed)
    args = ["zoosel", "bench", "fit"]
    for build, value in zip(builds, results, strict=True):
        args += ["--results", f"{build.name}={_named_path(value)[1]}"]
    args += [a for item in exclude for a in ("--exclude", item)]
    args += [a for p in pools for a in ("--pool", p)]
    if resamples != 2000 or seed != 0:
        args += ["--resamples", str(resamples), "--seed", str(seed)]
    if out is None:
        click.echo(joint.markdown(record, shlex.join(args)), nl=False)
    else:
        paths = joint.write(record, Path(out), shlex.join([*args, "--out", out]))
        for label, fit in record["pools"].items():
            click.echo(f"{label}: {fit['fit_all']} (single score: {fit['single_fit_all']})")
        click.echo(f"report: {paths['report.md']}")
    for build in builds:
        hint = ("" if build.versions_recorded else
                f" (stale scores cannot be told apart; --exclude {build.name}:SCORE leaves "
                "one out)")
        click.echo(f"{build.name}: {build.versions_note}{hint}", err=True)
