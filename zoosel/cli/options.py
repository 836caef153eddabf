"""Click options shared by every command that ranks candidates (``select``, ``recommend``).

Each group is a decorator, so a command keeps its own options between groups and its
``--help`` stays in a sensible order::

    @cli.command("mine")
    @ranking_options
    @click.option("--extra")
    def mine(extra, **options):
        ranking = zoosel.api.rank(**rank_arguments(options))

:func:`rank_arguments` turns the parsed options into the keyword arguments of
:func:`zoosel.api.rank`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from zoosel.sources.hub_listing import SORT_KEYS, SUPPORTED_LIBRARIES

F = TypeVar("F", bound=Callable[..., Any])


def option_group(options: list[Callable[[Any], Any]], title: str | None = None
                 ) -> Callable[[F], F]:
    """One decorator applying ``options`` (click decorators), listed in this order; with
    ``title``, ``--help`` of a :class:`GroupedCommand` shows them under that heading."""

    def decorate(func: F) -> F:
        for option in reversed(options):  # click lists options in decoration order
            func = option(func)
            if title is not None:
                params = getattr(func, "__click_params__", None) or [func.params[-1]]
                params[-1].help_section = title  # type: ignore[attr-defined]
        return func

    return decorate


def section(title: str, *options: Callable[[Any], Any]) -> Callable[[F], F]:
    """``options`` (click decorators) shown under ``title`` in a :class:`GroupedCommand`."""
    return option_group(list(options), title)


class GroupedCommand(click.Command):
    """A command whose ``--help`` lists its options in titled sections (the ``title`` of
    :func:`option_group` / :func:`section`), in the order they first appear; options
    without a section come last, under "Other options"."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        other: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            title = getattr(param, "help_section", None)
            (sections.setdefault(title, []) if title else other).append(record)
        if other:
            sections["Other options"] = other
        for title, rows in sections.items():
            with formatter.section(title):
                formatter.write_dl(rows)


def _param_count(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from zoosel.errors import UsageError
    from zoosel.sources.hub_listing import parse_count

    if value is None:
        return None
    try:
        return parse_count(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None


def per_class_value(value: str) -> int | None:
    """``--per-class``: a positive integer, or ``all`` (None)."""
    if value == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter("an integer, or 'all'") from None


dataset_options = option_group(title="Dataset", options=[
    click.option("--dataset", "-d", required=True,
                 help="Hub dataset id, image folder (one sub-folder per class), saved dataset "
                      "or parquet files."),
    click.option("--split", help="Split to sample from (default: train, else the first)."),
    click.option("--image-column", help="Image column (default: detected)."),
    click.option("--label-column", help="Label column (default: detected)."),
    click.option("--per-class", default="25", show_default=True,
                 help="Images sampled per class, or 'all'."),
    click.option("--seed", default=0, show_default=True, help="Seed of the per-class sample."),
])
"""``--dataset``, ``--split``, ``--image-column``, ``--label-column``, ``--per-class``,
``--seed``."""

_named_candidates = option_group(title="Candidates", options=[
    click.option("--trust-remote-code", is_flag=True,
                 help="Allow models that run code from their repository (listed ones that "
                      "need it are skipped otherwise)."),
    click.option("--model", "-m", "models", multiple=True,
                 help="Candidate as SOURCE:REF, e.g. hf:org/name@rev, timm:resnet18.a1_in1k, "
                      "local:PATH or local:FILE.safetensors@ARCH. Repeatable."),
    click.option("--timm-pattern", multiple=True,
                 help="List timm pretrained models matching this pattern. Repeatable."),
    click.option("--local-dir", multiple=True,
                 help="List every checkpoint sub-folder of this folder. Repeatable."),
])

_hub_listing = option_group(title="Hub listing", options=[
    click.option("--hub-filter", multiple=True,
                 help="List Hub models with this tag. Repeatable."),
    click.option("--hub-search", help="List Hub models whose id contains this text."),
    click.option("--hub-author", help="List Hub models of this user or organisation."),
    click.option("--hub-limit", type=int, help="List at most this many Hub models."),
    click.option("--hub-sort", type=click.Choice(SORT_KEYS), help="Order of the Hub listing."),
    click.option("--pipeline-tag", multiple=True,
                 help="Keep Hub models whose pipeline tag is exactly this (a --hub-filter tag "
                      "also matches custom tags). Repeatable: any, e.g. image-classification "
                      "and image-feature-extraction."),
    click.option("--library", type=click.Choice(SUPPORTED_LIBRARIES),
                 help="Keep Hub models of this library."),
    click.option("--license", "licenses", multiple=True,
                 help="Keep Hub models under this license (e.g. apache-2.0). Repeatable: any."),
    click.option("--min-params", callback=_param_count,
                 help="Keep models with at least this many parameters (300K, 5M, 1.2B); "
                      "models without a count in the listing are kept, with a note."),
    click.option("--max-params", callback=_param_count,
                 help="Keep models with at most this many parameters (300K, 5M, 1.2B)."),
    click.option("--include-gated", is_flag=True,
                 help="Keep gated Hub models (you need a token with access to them)."),
    click.option("--from-cache", is_flag=True,
                 help="List the models already in the local Hugging Face cache instead of "
                      "the Hub (automatic with HF_HUB_OFFLINE=1)."),
    click.option("--listing-ttl", type=click.FloatRange(min=0),
                 help="Seconds a Hub listing is reused from zoosel's cache (default 3600, "
                      "or $ZOOSEL_LISTING_TTL; 0: always ask the Hub)."),
])


def candidate_options(func: F) -> F:
    """``--model`` and the listing options of every built-in source."""
    return _named_candidates(_hub_listing(func))



def scorer_option_values(ctx: click.Context | None, param: click.Parameter | None,
                         values: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``--scorer-option SCORER.OPTION=VALUE`` (repeatable) as ``{scorer: {option: value}}``;
    the scorers check the names and values."""
    out: dict[str, dict[str, str]] = {}
    for item in values:
        key, eq, value = item.partition("=")
        name, dot, option = key.strip().partition(".")
        if not (eq and dot and name and option and value.strip()):
            raise click.BadParameter(
                f"{item!r}: write SCORER.OPTION=VALUE, e.g. linear_probe.solver=logistic.")
        out.setdefault(name, {})[option] = value.strip()
    return out


scorer_option = click.option(
    "--scorer-option", "scorer_option", multiple=True, callback=scorer_option_values,
    metavar="SCORER.OPTION=VALUE",
    help="A scorer's option, e.g. linear_probe.solver=logistic (the logistic probe instead "
         "of the default ridge one). Repeatable; `zoosel scorers` lists the options.")
"""``--scorer-option``: the ``scorer_options`` argument of :func:`zoosel.api.rank`."""

scorer_options = option_group(title="Scoring", options=[
    click.option("--scorer", "-s", "scorers", multiple=True,
                 help="Scorer to compute (repeatable; 'all' for every one). "
                      "Default: consensus, lfc, logme, leep, nce."),
    scorer_option,
    click.option("--sort-by", help="Scorer that orders the ranking (default: the first)."),
    click.option("--confidence", type=click.IntRange(min=0),
                 help="Resamples of the sample re-scored by the sort score (no forward pass) "
                      "for P(best) and a 90% rank interval; 0: off (default 50, or "
                      "$ZOOSEL_CONFIDENCE)."),
])
"""``--scorer``, ``--scorer-option``, ``--sort-by`` and ``--confidence``."""

_device_options = option_group(title="Device and batching", options=[
    click.option("--device", default="auto", show_default=True,
                 help="auto, cpu, cuda, cuda:1..."),
    click.option("--batch-size", type=int,
                 help="Images per forward pass (default: 32 on CPU, 128 on a GPU; halved on "
                      "running out of GPU memory)."),
    click.option("--workers", default=0, show_default=True,
                 help="Threads decoding and transforming images (0: one per CPU core, at "
                      "most 8)."),
    click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
                 default="auto", show_default=True,
                 help="Autocast precision of feature extraction (auto: bf16 on a GPU that "
                      "supports it, else fp32)."),
    click.option("--shard", type=click.Choice(["auto", "candidates", "samples"]),
                 default="auto", show_default=True,
                 help="With several processes: spread candidates, or each candidate's sample."),
])

_cache_options = option_group(title="Cache, resume and safety", options=[
    click.option("--cache-dir", help="Cache folder of features and Hub listings (default: "
                                     "$ZOOSEL_CACHE or ~/.cache/zoosel)."),
    click.option("--no-cache", is_flag=True, help="Neither read nor write the feature cache."),
    click.option("--run-dir", help="Write each candidate's result here as it completes; "
                                   "rerunning with the same folder resumes."),
    click.option("--fresh", is_flag=True, help="Ignore earlier results in --run-dir."),
    click.option("--allow-pickle", is_flag=True,
                 help="Allow pickled weights (.bin/.pt), loaded with weights_only=True."),
])

_sketch_options = option_group(title="Gradient sketches and source data", options=[
    click.option("--sketch-dim", type=int,
                 help="Dimension k of gradient sketches (default 10000)."),
    click.option("--sketch-layer", multiple=True,
                 help="Layer (name or pattern) whose gradients are sketched. Repeatable; "
                      "default: the last block before the classifier."),
    click.option("--sketch-head", type=click.Choice(["random", "pretrained", "label"]),
                 help="Output whose gradient is sketched (default: random)."),
    click.option("--sketch-seed", type=int, help="Seed of the sketch projection and head."),
    click.option("--source-data", multiple=True,
                 help="Source-domain dataset for domain_sim: DATASET, or PATTERN=DATASET for "
                      "candidates matching PATTERN. Repeatable."),
])


def engine_options(func: F) -> F:
    """Device, batching, cache, safety switches, gradient-sketch, source-data, run-folder and
    distribution options."""
    return _device_options(_cache_options(_sketch_options(func)))



quiet_option = section("Output", click.option("--quiet", "-q", is_flag=True,
                                              help="No progress output."))
"""``--quiet``: no progress output (the ``quiet`` parameter)."""


def ranking_options(func: F) -> F:
    """Every option :func:`rank_arguments` reads, in ``select``'s order."""
    return dataset_options(candidate_options(scorer_options(engine_options(func))))


RANK_OPTION_NAMES = (
    "dataset", "split", "image_column", "label_column", "per_class", "seed", "models",
    "hub_filter", "hub_search", "hub_author", "hub_limit", "hub_sort", "pipeline_tag",
    "library", "licenses", "min_params", "max_params", "include_gated", "from_cache",
    "listing_ttl", "timm_pattern", "local_dir", "scorers", "scorer_option", "sort_by",
    "device", "batch_size", "workers", "cache_dir", "no_cache", "trust_remote_code",
    "allow_pickle", "sketch_dim", "sketch_layer", "sketch_head", "sketch_seed", "source_data",
    "run_dir", "fresh", "shard", "precision", "confidence",
)
"""Parameter names the option groups above define (``quiet`` aside)."""


def candidate_arguments(options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :func:`zoosel.api.list_models` (and the candidate part of
    :func:`zoosel.api.rank`) from the options of :data:`candidate_options`."""
    o = options
    return dict(
        models=o["models"], hub_filter=o["hub_filter"], hub_search=o["hub_search"],
        hub_author=o["hub_author"], hub_limit=o["hub_limit"], hub_sort=o["hub_sort"],
        pipeline_tag=o["pipeline_tag"], library=o["library"], licenses=o["licenses"],
        min_params=o["min_params"], max_params=o["max_params"],
        include_gated=o["include_gated"], from_cache=o["from_cache"],
        listing_ttl=o["listing_ttl"], timm_patterns=o["timm_pattern"],
        local_dirs=o["local_dir"], trust_remote_code=o["trust_remote_code"],
    )


def rank_arguments(options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :func:`zoosel.api.rank` from the parsed shared options.

    ``dataset`` is included; ``progress`` and output arguments are left to the command.
    """
    o = options
    return dict(
        dataset=o["dataset"], **candidate_arguments(o),
        scorers=o["scorers"] or None, scorer_options=o["scorer_option"] or None,
        sort_by=o["sort_by"], split=o["split"],
        image_column=o["image_column"], label_column=o["label_column"],
        per_class=per_class_value(o["per_class"]), seed=o["seed"], device=o["device"],
        batch_size=o["batch_size"], workers=o["workers"], cache_dir=o["cache_dir"],
        use_cache=not o["no_cache"], allow_pickle=o["allow_pickle"],
        sketch={"k": o["sketch_dim"], "layers": o["sketch_layer"] or None,
                "head": o["sketch_head"], "seed": o["sketch_seed"]},
        source_data=o["source_data"], run_dir=o["run_dir"], fresh=o["fresh"],
        shard=o["shard"], precision=o["precision"], confidence=o["confidence"],
    )
