"""The library API the command line wraps: :func:`rank`, :func:`score` and listings."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoosel.data import Sample, TargetDataset, load_target, per_class_sample
from zoosel.engine.cache import FeatureCache, default_cache_dir, entry_key
from zoosel.engine.distributed import Workers, choose_mode
from zoosel.engine.extract import autocast_dtype, resolve_device
from zoosel.engine.preprocess import Pipeline, auto_workers, default_batch_size, default_precision
from zoosel.engine.runner import (
    EngineSettings,
    Prefetcher,
    candidate_key,
    needs_of,
    run_candidate,
    score_arrays,
    will_load,
)
from zoosel.errors import CandidateError, NoResultsError, UnknownNameError, UsageError
from zoosel.formats import OutputFormat
from zoosel.plugins import collect
from zoosel.sources.base import ModelSource
from zoosel.types import (
    Candidate,
    CandidateList,
    CandidateResult,
    DatasetSummary,
    ListRequest,
    LoadSettings,
    Need,
    Ranking,
    Scorer,
    Skipped,
)

DEFAULT_SCORERS = ("consensus", "lfc", "logme", "leep", "nce")  # the first sorts
SKETCH_DEFAULTS: dict[str, Any] = {"k": 10_000, "layers": (), "head": "random", "seed": 0}


def list_sources() -> dict[str, ModelSource]:
    """Every registered model source, by name."""
    return collect("register_sources", "source")


def list_scorers() -> dict[str, Scorer]:
    """Every registered scorer, by name."""
    return collect("register_scorers", "scorer")


def list_formats() -> dict[str, OutputFormat]:
    """Every registered output format, by name."""
    return collect("register_formats", "format")


def get_format(name: str) -> OutputFormat:
    """The output format called ``name`` (with a "did you mean" error)."""
    formats = list_formats()
    if name not in formats:
        raise UnknownNameError("format", name, list(formats))
    return formats[name]


def select_scorers(names: Sequence[str] | None,
                   options: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, Scorer]:
    """Scorers by name, in order; ``None`` gives the default set, ``all`` every one.

    ``options`` sets scorer options, ``{scorer: {option: value}}`` (see
    :attr:`Scorer.options`), for scorers among the chosen ones.
    """
    available = list_scorers()
    if not names:
        names = [n for n in DEFAULT_SCORERS if n in available]
    elif "all" in names:  # the default set first, so the default primary stays first
        names = [n for n in DEFAULT_SCORERS if n in available] + sorted(
            n for n in available if n not in DEFAULT_SCORERS)
    chosen: dict[str, Scorer] = {}
    for name in names:
        if name not in available:
            raise UnknownNameError("scorer", name, [*available, "all"])
        chosen[name] = available[name]
    for name, values in (options or {}).items():
        if name not in available:
            raise UnknownNameError("scorer", name, list(available))
        if name not in chosen:
            raise UsageError(f"options are given for scorer {name!r}, which is not among the "
                             f"chosen ones ({', '.join(chosen)}); add --scorer {name}.")
        chosen[name] = chosen[name].with_options(values)
    return chosen


def _options_of(chosen: Mapping[str, Scorer]) -> dict[str, dict[str, str]]:
    """The scorer options that differ from the defaults, by scorer."""
    return {name: dict(s.option_values) for name, s in chosen.items() if s.option_values}


def parse_model(spec: str, sources: dict[str, ModelSource]) -> tuple[ModelSource, str]:
    """Split ``source:ref``; a bare existing path is local, any other bare name hf."""
    prefix, sep, ref = spec.partition(":")
    if sep and prefix in sources:
        return sources[prefix], ref
    if sep and "/" not in prefix and not Path(spec).exists():
        raise UnknownNameError("model source", prefix, list(sources))
    if Path(spec).expanduser().exists() and "local" in sources:
        return sources["local"], spec
    if "hf" in sources:
        return sources["hf"], spec
    raise UsageError(f"cannot tell which source {spec!r} comes from; write SOURCE:REF.")


def list_candidates(
    request: ListRequest | None = None, models: Sequence[str] = ()
) -> tuple[list[Candidate], list[Skipped], list[CandidateResult]]:
    """Candidates from explicit ``models`` and every source's listing, de-duplicated.

    Returns ``(candidates, skipped, failed)``: a model that cannot even be resolved
    (or a listing that fails) is a failure record, not an exception.
    """
    sources = list_sources()
    found: dict[str, Candidate] = {}
    skipped: list[Skipped] = []
    failed: list[CandidateResult] = []

    def take(item: Candidate | Skipped) -> None:
        if isinstance(item, Skipped):
            skipped.append(item)
        elif item.id not in found:
            found[item.id] = item

    for spec in models:
        source, ref = parse_model(spec, sources)
        try:
            take(source.resolve(ref))
        except CandidateError as exc:
            failed.append(CandidateResult(candidate=spec, source=source.name, error=str(exc)))
    if request is not None:
        for source in sources.values():
            try:
                for item in source.list_candidates(request):
                    take(item)
            except CandidateError as exc:
                failed.append(CandidateResult(candidate=f"{source.name}:(listing)",
                                              source=source.name, error=str(exc)))
    return list(found.values()), skipped, failed


def list_request(
    *,
    hub_filter: Sequence[str] = (),
    hub_search: str | None = None,
    hub_author: str | None = None,
    hub_limit: int | None = None,
    hub_sort: str | None = None,
    pipeline_tag: str | Sequence[str] | None = None,
    library: str | None = None,
    licenses: Sequence[str] = (),
    min_params: int | str | None = None,
    max_params: int | str | None = None,
    include_gated: bool = False,
    from_cache: bool = False,
    listing_ttl: float | None = None,
    timm_patterns: Sequence[str] = (),
    local_dirs: Sequence[str] = (),
    cache_dir: str | Path | None = None,
    trust_remote_code: bool = False,
) -> ListRequest:
    """A checked :class:`ListRequest`; parameter counts may be written ``5M``, ``1.2B``."""
    from zoosel.sources.hub_listing import SUPPORTED_LIBRARIES, parse_count

    if library is not None and library not in SUPPORTED_LIBRARIES:
        raise UnknownNameError("library", library, list(SUPPORTED_LIBRARIES))
    low = parse_count(min_params) if min_params is not None else None
    high = parse_count(max_params) if max_params is not None else None
    if low is not None and high is not None and low > high:
        raise UsageError(f"--min-params ({min_params}) is larger than --max-params "
                         f"({max_params}); nothing could match.")
    if listing_ttl is not None and listing_ttl < 0:
        raise UsageError("--listing-ttl must be 0 (no listing cache) or a number of seconds.")
    if pipeline_tag is not None and not isinstance(pipeline_tag, str):
        pipeline_tag = ",".join(pipeline_tag) or None
    return ListRequest(
        hub_filter=tuple(hub_filter), hub_search=hub_search, hub_author=hub_author,
        hub_limit=hub_limit, hub_sort=hub_sort, hub_pipeline_tag=pipeline_tag,
        hub_library=library, hub_licenses=tuple(licenses), min_params=low, max_params=high,
        include_gated=include_gated, trust_remote_code=trust_remote_code,
        from_cache=from_cache, listing_ttl=listing_ttl,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
        timm_patterns=tuple(timm_patterns), local_dirs=tuple(local_dirs),
    )


_NO_CANDIDATES = (
    "no candidates: name models with --model, or list them with --hub-filter, --hub-search, "
    "--hub-author, --pipeline-tag, --library, --license, --from-cache, --timm-pattern or "
    "--local-dir."
)


def list_models(
    *,
    models: Sequence[str] = (),
    cache_dir: str | Path | None = None,
    **listing: Any,
) -> CandidateList:
    """The candidates :func:`rank` would score, without loading or scoring any.

    ``listing`` takes the keyword arguments of :func:`list_request` (Hub filters, limit,
    sort, parameter range, license, ``from_cache``, ``listing_ttl``, timm patterns,
    local folders). ``cache_dir`` is zoosel's cache folder, where Hub listings are kept.
    """
    request = list_request(**listing, cache_dir=cache_dir)
    if not models and request.is_empty():
        raise UsageError(_NO_CANDIDATES)
    return CandidateList(*list_candidates(request, models))


def rank(
    dataset: str,
    *,
    models: Sequence[str] = (),
    scorers: Sequence[str] | None = None,
    scorer_options: Mapping[str, Mapping[str, str]] | None = None,
    sort_by: str | None = None,
    split: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    per_class: int | None = 25,
    seed: int = 0,
    device: str = "auto",
    batch_size: int | None = None,
    workers: int = 0,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    progress: bool = True,
    results_file: str | Path | None = None,
    on_result: Callable[[CandidateResult], None] | None = None,
    sketch: Mapping[str, Any] | None = None,
    source_data: Sequence[str] = (),
    run_dir: str | Path | None = None,
    fresh: bool = False,
    shard: str = "auto",
    precision: str = "auto",
    pipeline: bool = True,
    confidence: int | None = None,
    **listing: Any,
) -> Ranking:
    """Rank candidate models for ``dataset``, best first.

    Candidates come from ``models`` (``source:ref``) and from every source's
    listing (Hub filters, timm patterns, local folders; ``listing`` takes the keyword
    arguments of :func:`list_request`, and :func:`list_models` shows what they give
    without scoring). Each is extracted once
    on a seeded per-class sample (``per_class`` images of every class), scored
    by every chosen scorer, and sorted by ``sort_by`` (default: the first
    scorer). Candidates that fail are kept in :attr:`Ranking.failed` with the
    reason. ``results_file``, when given, receives one JSON line per candidate
    as soon as it is done. ``sketch`` overrides the gradient-sketch options
    (``k``, ``layers``, ``head``, ``seed``) of scorers that need gradients.
    ``source_data`` gives source-domain datasets for Domain Similarity, as
    ``DATASET`` (every candidate) or ``PATTERN=DATASET`` (candidates whose id
    matches the fnmatch pattern; the first match wins). With ``run_dir``, each
    candidate's result is written there as it completes, and a rerun with the
    same settings skips the candidates already scored (``fresh`` starts over).

    Launched on several processes (``accelerate launch -m zoosel select ...``),
    candidates or the sample are spread over them (``shard``: ``auto``,
    ``candidates`` or ``samples``); every process returns the same ranking.
    ``precision`` (``fp32``, ``bf16``, ``fp16``) applies to extraction only;
    scores are always computed in float64 where the scorer needs it. ``auto`` is bf16
    on a GPU that supports it, else fp32 (always fp32 on CPU).

    Each sample image is decoded once per run and transformed on ``workers`` threads
    (0: one per CPU core, at most 8); candidates with the same preprocessing share the
    transformed images, and the next candidate loads while the current one runs.
    ``batch_size`` None starts at 32 on CPU and 128 on a GPU, halved on running out of
    GPU memory. ``pipeline=False`` runs the earlier way instead (each candidate decodes
    and transforms the sample through a DataLoader of ``workers`` processes), for
    comparisons. Scores are cached with the features: a rerun that adds a scorer
    computes only that one.

    ``scorer_options`` sets options of chosen scorers, ``{scorer: {option: value}}``, e.g.
    ``{"linear_probe": {"solver": "logistic"}}`` (:attr:`Scorer.options` lists them;
    cached scores are kept apart per setting).

    ``confidence`` resamples the per-class sample that many times (seeded by ``seed``)
    and re-ranks the candidates by the sort score on the arrays already extracted, giving
    each candidate's probability of being the best and a rank interval
    (:attr:`Ranking.confidence`, see :mod:`zoosel.confidence`); 0 turns it off, None
    takes ``$ZOOSEL_CONFIDENCE`` or 50.
    """
    started = time.perf_counter()
    procs = Workers.current()
    progress = progress and procs.is_main
    chosen = select_scorers(scorers, scorer_options)
    primary = sort_by or next(iter(chosen))
    if primary not in chosen:
        raise UsageError(f"--sort-by {primary!r} is not among the chosen scorers: "
                         f"{', '.join(chosen)}.")
    if confidence is None:
        from zoosel.confidence import default_replicates

        confidence = default_replicates()
    if confidence < 0:
        raise UsageError("--confidence must be 0 (off) or a number of resamples.")
    request = list_request(**listing, cache_dir=cache_dir, trust_remote_code=trust_remote_code)
    if not models and request.is_empty():
        raise UsageError(_NO_CANDIDATES)
    if per_class is not None and per_class < 1:
        raise UsageError(f"--per-class must be at least 1 (or 'all'), got {per_class}.")
    check_dataset_argument(dataset)
    candidates, skipped, failed = list_candidates(request, models)
    if not candidates:
        raise NoResultsError(why_no_candidates(request, models, skipped, failed))
    with _quiet_hub_retries():
        target = load_target(dataset, split, image_column, label_column)
    if pipeline:
        target.keep_decoded()
    sample = per_class_sample(target, per_class, seed)
    _say(progress, f"zoosel: {len(sample.class_names)} classes, {len(sample.indices)} samples "
         f"from {dataset} [{target.split}]; {len(candidates)} candidates, "
         f"{len(skipped)} skipped; scorers: {', '.join(chosen)}")
    needs = needs_of(chosen)
    cache = FeatureCache(cache_dir or default_cache_dir()) if use_cache else None
    if procs.count > 1 and device == "auto":
        device = procs.device or "cpu"
    load = LoadSettings(device=resolve_device(device), trust_remote_code=trust_remote_code,
                        allow_pickle=allow_pickle)
    precision = default_precision(load.device) if precision == "auto" else precision
    autocast_dtype(precision)  # checks the name
    batch_size = batch_size or default_batch_size(load.device)
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1.")
    shared = {}
    timings: dict[str, float] = {}
    kept: dict[str, dict[str, np.ndarray]] = {}
    if Need.PROBE_FEATURES in needs:
        probe = (_probe(target, sample, cache, load.device, progress) if procs.is_main
                 else (None, 0.0))
        shared["probe_features"], timings["probe"] = procs.broadcast(probe)
    settings = EngineSettings(
        load=load, batch_size=batch_size, workers=workers, cache=cache, progress=progress,
        sketch=_sketch_options(sketch), shared=shared, precision=precision,
        source_domain=_source_domains(source_data, per_class, seed, pipeline)
        if Need.SOURCE_MEANS in needs else None,
        pipeline=Pipeline(workers or auto_workers(), load.device) if pipeline else None,
        loads=Prefetcher() if pipeline else None,
        keep=_keeper(kept, chosen[primary]) if confidence else None,
    )
    try:
        ranking = _rank_candidates(
            dataset, target, sample, candidates, skipped, failed, chosen, primary, settings,
            procs, progress, per_class, seed, source_data, run_dir, fresh, shard, results_file,
            on_result, timings, started)
        if confidence:
            ranking.confidence = procs.broadcast(
                _confidence(ranking, kept, candidates, target, sample, chosen[primary],
                            settings, confidence, seed, progress) if procs.is_main else None)
            ranking.seconds = time.perf_counter() - started
        return ranking
    finally:
        if settings.pipeline is not None:
            settings.pipeline.close()
        if settings.loads is not None:
            settings.loads.close()


def _rank_candidates(
    dataset: str, target: TargetDataset, sample: Sample, candidates: list[Candidate],
    skipped: list[Skipped], failed: list[CandidateResult], chosen: dict[str, Scorer],
    primary: str, settings: EngineSettings, procs: Workers, progress: bool,
    per_class: int | None, seed: int, source_data: Sequence[str],
    run_dir: str | Path | None, fresh: bool, shard: str,
    results_file: str | Path | None, on_result: Callable[[CandidateResult], None] | None,
    timings: dict[str, float], started: float,
) -> Ranking:
    """The candidate loop of :func:`rank`, once its settings are made."""
    run = None
    finished: dict[str, CandidateResult] = {}
    if run_dir is not None:
        from zoosel.engine.rundir import RunDir

        config = {"dataset": target.fingerprint, "split": target.split, "sample": sample.key,
                  "scorers": list(chosen), "sketch": settings.sketch,
                  "source_data": list(source_data)}
        options = _options_of(chosen)
        if options:  # absent otherwise: earlier run folders still resume
            config["scorer_options"] = options
        if procs.is_main:
            run = RunDir(run_dir, config, fresh=fresh)
            finished = run.finished()
        procs.barrier()
        if not procs.is_main:
            run = RunDir(run_dir, config)
        finished = procs.broadcast(finished)
    sources = list_sources()
    done: list[CandidateResult] = []
    for candidate in candidates:
        if candidate.id in finished:
            finished[candidate.id].resumed = True
            _say(progress, f"{candidate.id}: done in an earlier run")
    pending = [c for c in candidates if c.id not in finished]
    mode = choose_mode(shard, len(pending), procs) if procs.count > 1 else "candidates"
    mine = procs.my_candidates(pending) if mode == "candidates" else pending
    sharded = procs if mode == "samples" else None
    results: list[CandidateResult] = []

    def prefetch(candidate: Candidate) -> Callable[[], None] | None:
        if settings.loads is None:
            return None

        def start() -> None:
            if will_load(candidate, target, sample, chosen, settings):
                settings.loads.start(candidate, sources[candidate.source], settings.load)
        return start

    for i, candidate in enumerate(mine, 1):
        upcoming = prefetch(mine[i]) if i < len(mine) else None
        result = run_candidate(candidate, sources[candidate.source], target, sample, chosen,
                               settings, sharded, upcoming)
        if run is not None and (mode == "candidates" or procs.is_main):
            run.record(result)
        status = "failed: " + result.error if result.error else (
            "cached" if result.cached else f"{result.seconds:.1f}s")
        _say(progress, f"[{i}/{len(mine)}] {candidate.id}: {status}")
        if procs.count == 1:
            _emit(result, results_file, on_result)
        results.append(result)
    if procs.count > 1 and mode == "candidates":
        by_id = {r.candidate: r for r in procs.gather(results)}
        results = [by_id[c.id] for c in pending]
    if procs.count > 1 and procs.is_main:
        for result in results:
            _emit(result, results_file, on_result)
    by_id = {**{r.candidate: r for r in results}, **finished}
    for candidate in candidates:
        result = by_id[candidate.id]
        (failed if result.error else done).append(result)
    pool_relative = _normalise_pool(done, chosen)
    done.sort(key=lambda r: _sort_key(r, primary))
    ranking = Ranking(
        dataset=DatasetSummary(
            name=dataset, split=target.split, fingerprint=target.fingerprint,
            num_classes=len(sample.class_names), num_samples=len(sample.indices),
            per_class=per_class, seed=seed, class_names=sample.class_names,
            class_counts=tuple(int(c) for c in np.bincount(
                sample.labels, minlength=len(sample.class_names))),
        ),
        scorers=list(chosen), primary=primary, results=done, failed=failed, skipped=skipped,
        seconds=time.perf_counter() - started, pool_relative=pool_relative, timings=timings,
        scorer_options=_options_of(chosen),
    )
    if not done:
        raise NoResultsError(_nothing_scored(ranking), ranking)
    return ranking


def _keeper(kept: dict[str, dict[str, np.ndarray]], scorer: Scorer
            ) -> Callable[[str, Mapping[str, np.ndarray]], None]:
    """Keeps the arrays ``scorer`` reads of every candidate scored, in ``kept``."""
    from zoosel.confidence import needed_arrays

    wanted = needed_arrays(scorer)

    def keep(candidate: str, arrays: Mapping[str, np.ndarray]) -> None:
        kept[candidate] = {k: v for k, v in arrays.items() if k in wanted}
    return keep


def _confidence(ranking: Ranking, kept: dict[str, dict[str, np.ndarray]],
                candidates: Sequence[Candidate], target: TargetDataset, sample: Sample,
                scorer: Scorer, settings: EngineSettings, replicates: int, seed: int,
                progress: bool) -> Any:
    """:func:`zoosel.confidence.assess` on the arrays kept during the run; candidates
    scored elsewhere (an earlier run, another process) are read back from the cache."""
    from zoosel.confidence import assess, needed_arrays
    from zoosel.engine.runner import sketch_array_name

    wanted = needed_arrays(scorer)
    by_id = {c.id: c for c in candidates}
    for r in ranking.results:
        if r.candidate in kept or r.candidate not in by_id or settings.cache is None:
            continue
        held = settings.cache.load(candidate_key(by_id[r.candidate], target, sample, settings))
        if held is not None:
            arrays = {**settings.shared, **held[1]}
            sketch = sketch_array_name(settings.sketch)
            if sketch in arrays:
                arrays["gradient_sketch"] = arrays[sketch]
            kept[r.candidate] = {k: v for k, v in arrays.items() if k in wanted}
    _say(progress, f"zoosel: confidence, {replicates} resamples of the sample")
    return assess(ranking, {c: a for c, a in kept.items() if wanted <= set(a)}, sample.labels,
                  scorer, replicates, seed)


def score(
    features: np.ndarray | None,
    labels: Sequence[int] | np.ndarray,
    *,
    source_probs: np.ndarray | None = None,
    scorers: Sequence[str] | None = None,
    scorer_options: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, float]:
    """Score features the user already has, with no model: ``{scorer: value}``.

    Labels may be any hashable values; they are mapped to ``0..C-1``. Pool-relative
    scorers (such as the default ``consensus``) rank candidates against each other, so
    they have no value for one feature set: the default set leaves them out and naming
    one is an error. ``scorer_options`` as in :func:`rank`.
    """
    chosen = select_scorers(scorers, scorer_options)
    relative = [name for name, s in chosen.items() if s.pool_normalize is not None]
    named = [name for name in relative if name in (scorers or ())]
    if named:
        raise UsageError(
            f"{', '.join(named)} compares candidates with each other, so it has no value "
            "for a single feature set; rank several models with `zoosel select` (or "
            "`zoosel.rank`), or score its components by name (see `zoosel scorers`).")
    chosen = {name: s for name, s in chosen.items() if name not in relative}
    _, y = np.unique(np.asarray(labels), return_inverse=True)
    arrays = {}
    if features is not None:
        arrays["features"] = np.asarray(features)
    if source_probs is not None:
        arrays["source_probs"] = np.asarray(source_probs)
    values, components, notes = score_arrays(arrays, y, int(y.max()) + 1, chosen)
    if not values:
        raise UsageError("no scorer could run: " + "; ".join(notes))
    return values


def _probe(target: TargetDataset, sample: Sample, cache: FeatureCache | None, device: str,
           progress: bool) -> tuple[np.ndarray, float]:
    """The probe network's features on the sample, and the seconds its training took."""
    from zoosel.engine.probe import ProbeConfig, probe_features

    config = ProbeConfig()
    key = entry_key(kind="probe", dataset=target.fingerprint, image_column=target.image_column,
                    sample=sample.key, probe=config.key())
    cached = cache.load(key) if cache is not None else None
    if cached is not None and "probe_features" in cached[1]:
        return cached[1]["probe_features"], float(cached[0].get("seconds", 0.0))
    _say(progress, f"zoosel: training the probe network on {len(sample.indices)} images")
    began = time.perf_counter()
    features = probe_features(target.image, sample.indices, sample.labels,
                              len(sample.class_names), config, device)
    seconds = time.perf_counter() - began
    if cache is not None:
        cache.store(key, {"kind": "probe", "seconds": seconds}, {"probe_features": features})
    return features, seconds


def _source_domains(
    specs: Sequence[str], per_class: int | None, seed: int, keep_decoded: bool = False,
) -> Callable[[Candidate], tuple[TargetDataset, Sample] | None]:
    """A resolver from candidate to its source-domain dataset and sample (memoised)."""
    import fnmatch

    rules = []
    for spec in specs:
        pattern, sep, dataset = spec.partition("=")
        rules.append((pattern, dataset) if sep else ("*", spec))
    loaded: dict[str, tuple[TargetDataset, Sample]] = {}

    def resolve(candidate: Candidate) -> tuple[TargetDataset, Sample] | None:
        for pattern, dataset in rules:
            if fnmatch.fnmatch(candidate.id, pattern) or fnmatch.fnmatch(candidate.ref, pattern):
                if dataset not in loaded:
                    data = load_target(dataset)
                    if keep_decoded:
                        data.keep_decoded()
                    loaded[dataset] = (data, per_class_sample(data, per_class, seed))
                return loaded[dataset]
        return None

    return resolve


def _sketch_options(given: Mapping[str, Any] | None) -> dict[str, Any]:
    unknown = set(given or {}) - set(SKETCH_DEFAULTS)
    if unknown:
        raise UsageError(f"unknown sketch options {sorted(unknown)}; known: "
                         f"{', '.join(SKETCH_DEFAULTS)}.")
    options = {**SKETCH_DEFAULTS, **{k: v for k, v in (given or {}).items() if v is not None}}
    options["layers"] = tuple(options["layers"])
    if int(options["k"]) < 1:
        raise UsageError("the sketch dimension must be at least 1.")
    return options


def _sort_key(result: CandidateResult, primary: str) -> tuple[int, float]:
    value = result.scores.get(primary)
    if value is None or not math.isfinite(value):
        return (1, 0.0)
    return (0, -value)


def _normalise_pool(results: list[CandidateResult], scorers: dict[str, Scorer]) -> list[str]:
    names = []
    for name, scorer in scorers.items():
        if scorer.pool_normalize is None:
            continue
        names.append(name)
        raw = {r.candidate: r.components[name] for r in results if name in r.components}
        final = scorer.pool_normalize(raw) if raw else {}
        for r in results:
            if r.candidate in final:
                r.scores[name] = final[r.candidate]
    return names


def _emit(result: CandidateResult, path: str | Path | None,
          callback: Callable[[CandidateResult], None] | None) -> None:
    if path is not None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(result.to_dict()) + "\n")
            fh.flush()
    if callback is not None:
        callback(result)


def check_dataset_argument(dataset: str) -> None:
    """Fail before any loading, saying what to do, on a ``dataset`` that cannot work:
    images lying directly in the folder, or a mistyped local folder that would
    otherwise be looked up on the Hub."""
    import difflib

    from zoosel.data.loading import IMAGE_SUFFIXES
    from zoosel.errors import DatasetError, DatasetNotFoundError

    path = Path(dataset).expanduser()
    if path.is_dir():
        entries = list(path.iterdir())
        images = sorted(p.name for p in entries
                        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if images and not any(p.is_dir() for p in entries):
            raise DatasetError(
                f"{dataset} holds {len(images)} images directly, but an image folder needs "
                "one sub-folder per class (the folder name is the label): move them to "
                f"{path / '<class name>' / images[0]}, and so on."
            )
        return
    if path.exists():
        return
    if dataset.startswith(("/", "./", "../", "~")) or path.suffix == ".parquet":
        raise DatasetNotFoundError(f"dataset path {dataset!r} does not exist.")
    parent = path.parent if str(path.parent) not in ("", ".") else Path(".")
    if parent != Path(".") and not parent.is_dir():
        return  # OWNER/NAME with no local folder OWNER: a Hub dataset id
    folders = [p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")]
    close = difflib.get_close_matches(path.name, folders, n=1, cutoff=0.7)
    if parent != Path(".") or close:
        hint = f" Did you mean {parent / close[0]}?" if close else ""
        raise DatasetNotFoundError(
            f"there is no folder {dataset!r} in {parent.resolve()}.{hint} (A name that is "
            "not an existing folder is looked up as a Hub dataset id; write a local path "
            "as ./NAME.)"
        )


class _quiet_hub_retries:
    """Silence huggingface_hub's "Retrying in 1s" lines: a failure is reported once."""

    def __enter__(self) -> None:
        import logging

        self.logger = logging.getLogger("huggingface_hub")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.level)


def why_no_candidates(request: ListRequest, models: Sequence[str], skipped: Sequence[Skipped],
                      failed: Sequence[CandidateResult]) -> str:
    """Why listing found nothing to rank, source by source, and what to do."""
    from zoosel.sources import hub_listing

    lines = ["no candidate to rank."]
    if request.wants_hub_listing() or request.from_cache:
        if hub_listing.uses_local_cache(request):
            from huggingface_hub import constants

            from zoosel.sources.hf_cache import _cached_repos

            why = "--from-cache" if request.from_cache else "offline mode (HF_HUB_OFFLINE=1)"
            count = len(_cached_repos())
            held = (f"holds {count} models, none matching the filters" if count
                    else "is empty")
            lines.append(f"  Hub filters: with {why} the local Hugging Face cache "
                         f"({constants.HF_HUB_CACHE}) was listed instead of the Hub, and it "
                         f"{held}. Download models once online, or drop the offline setting.")
        else:
            lines.append("  Hub filters: the Hub listed no model matching them; loosen the "
                         "filters (zoosel list shows what they give).")
    for root in request.local_dirs:
        folder = Path(root).expanduser()
        subs = [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
        if not subs:
            lines.append(f"  --local-dir {root}: no checkpoint sub-folders in it (each "
                         "candidate is a sub-folder with config.json and weights).")
    for pattern in request.timm_patterns:
        lines.append(f"  --timm-pattern {pattern}: matches no pretrained timm model "
                     "(or every match was excluded by the filters).")
    lines += [f"  {r.candidate}: {r.error}" for r in failed]
    lines += [f"  skipped {s.id}: {s.reason}" for s in skipped]
    return "\n".join(lines)


def _nothing_scored(ranking: Ranking) -> str:
    lines = ["no candidate could be scored."]
    lines += [f"  {r.candidate}: {r.error}" for r in ranking.failed]
    lines += [f"  skipped {s.id}: {s.reason}" for s in ranking.skipped]
    return "\n".join(lines)


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(message, file=sys.stderr)


def iter_scorer_rows(scorers: Iterable[Scorer]) -> list[dict[str, str]]:
    """Rows describing scorers, for ``zoosel scorers``."""
    return [
        {"name": s.name, "needs": ", ".join(sorted(n.value for n in s.needs)),
         "summary": s.summary + (f" (raw: {s.raw})" if s.raw else ""),
         "pool": "yes" if s.pool_normalize else "", "reference": s.reference,
         "options": "; ".join(f"{k}: {'|'.join(v)}" for k, v in s.options.items())}
        for s in scorers
    ]


__all__ = [
    "DEFAULT_SCORERS", "get_format", "list_candidates", "list_formats", "list_models",
    "list_request", "list_scorers", "list_sources", "rank", "score", "select_scorers",
]
