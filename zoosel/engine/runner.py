"""Per-candidate work: cache lookup, loading, extraction, scoring, result record."""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoosel.data import Sample, TargetDataset
from zoosel.engine.cache import FeatureCache, entry_key
from zoosel.engine.distributed import Workers, in_sample_order
from zoosel.engine.extract import extract, extract_sketch
from zoosel.engine.preprocess import (
    Pipeline,
    rows_digest,
    scoring_threads,
    wants_channels_last,
)
from zoosel.errors import CandidateError, ScoringError
from zoosel.sources.base import ModelSource
from zoosel.threads import one_torch_thread, torch_threads
from zoosel.types import (
    Candidate,
    CandidateResult,
    LoadedModel,
    LoadSettings,
    Need,
    ScoreInputs,
    Scorer,
)


@dataclass(frozen=True)
class EngineSettings:
    """How the engine runs candidates.

    ``sketch`` holds the gradient-sketch options (``k``, ``layers``, ``head``,
    ``seed``: see :class:`zoosel.engine.sketch.SketchConfig`), used only when a
    scorer needs gradient sketches.
    """

    load: LoadSettings
    batch_size: int = 32
    workers: int = 0
    cache: FeatureCache | None = None
    progress: bool = True
    sketch: Mapping[str, Any] = field(default_factory=dict)
    shared: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Dataset-level arrays given to every candidate's scorers (probe features)."""
    source_domain: Callable[[Candidate], tuple[TargetDataset, Sample] | None] | None = None
    """Source-domain data of a candidate, for scorers that need source class means."""
    precision: str = "fp32"
    """Autocast precision of feature extraction (``fp32``, ``bf16``, ``fp16``)."""
    pipeline: Pipeline | None = None
    """Shared preprocessing (decoded images, transform threads, shared tensors) and the
    engine's thread policy; None: every candidate decodes and transforms the sample
    itself through a DataLoader of ``workers`` processes, as before."""
    loads: Prefetcher | None = None
    """Loads the next candidate in the background while the current one runs."""
    keep: Callable[[str, Mapping[str, np.ndarray]], None] | None = None
    """Receives each candidate's id and the arrays it is scored on (for confidence)."""


class Prefetcher:
    """Loads (and downloads) candidates ahead of their turn on one background thread."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="zoosel-load",
                                        initializer=one_torch_thread)
        self._pending: dict[str, Future[LoadedModel]] = {}

    def start(self, candidate: Candidate, source: ModelSource, load: LoadSettings) -> None:
        if candidate.id not in self._pending:
            self._pending[candidate.id] = self._pool.submit(source.load, candidate, load)

    def take(self, candidate: Candidate) -> Future[LoadedModel] | None:
        return self._pending.pop(candidate.id, None)

    def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


class _LazyModel:
    """Loads the candidate on first use only, so cache hits never load it."""

    def __init__(self, candidate: Candidate, source: ModelSource, settings: EngineSettings,
                 upcoming: Callable[[], None] | None = None):
        self.candidate, self.source, self.settings = candidate, source, settings
        self.model: LoadedModel | None = None
        self.loaded = False
        self.batches = 0
        self.batch_size = settings.batch_size
        self.notes: list[str] = []
        self.channels_last = False
        self.upcoming = upcoming

    def get(self) -> LoadedModel:
        if self.model is None:
            self.model = self._load()
            self.loaded = True
            device = self.settings.load.device
            if self.settings.pipeline is not None and wants_channels_last(device,
                                                                          self.model.module):
                self.model.module.to(memory_format=_channels_last())
                self.channels_last = True
            self.start_next()
        return self.model

    def _load(self) -> LoadedModel:
        ahead = self.settings.loads.take(self.candidate) if self.settings.loads else None
        if ahead is not None:
            try:
                return ahead.result()
            except Exception:  # e.g. short of memory beside the previous model: load now
                pass
        return self.source.load(self.candidate, self.settings.load)

    def start_next(self) -> None:
        """Start loading the next candidate (once), now that this one needs no loading."""
        if self.upcoming is not None:
            upcoming, self.upcoming = self.upcoming, None
            upcoming()

    def release(self) -> None:
        """Drop the model (and the GPU memory it held)."""
        if self.model is not None:
            self.model = None
            if self.settings.load.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()

    def features(self, target: TargetDataset, rows: Any, desc: str) -> dict[str, np.ndarray]:
        import torch
        from tqdm.auto import tqdm

        model = self.get()
        while True:
            with tqdm(total=len(rows), desc=desc[:60], unit="img", leave=False,
                      disable=not self.settings.progress, file=sys.stderr) as bar:
                try:
                    arrays, batches = extract(
                        model, target.image, rows, progress=bar.update,
                        precision=self.settings.precision,
                        **{**_loader_args(self.settings, target, rows),
                           "batch_size": self.batch_size,
                           "channels_last": self.channels_last})
                except torch.cuda.OutOfMemoryError as exc:
                    if self.batch_size == 1:
                        raise CandidateError("out of GPU memory even with batch size 1") \
                            from exc
                    torch.cuda.empty_cache()
                    self.batch_size //= 2
                    self.notes.append(f"out of GPU memory: retried with batch size "
                                      f"{self.batch_size}")
                    continue
            self.batches += batches
            return arrays


def needs_of(scorers: Mapping[str, Scorer]) -> set[Need]:
    """Union of what ``scorers`` declare they need."""
    return set().union(*(s.needs for s in scorers.values())) if scorers else set()


def sketch_array_name(options: Mapping[str, Any]) -> str:
    """Cache name of the sketch array for these sketch options."""
    return "gradient_sketch-" + entry_key(**dict(options))[:12]


def _missing(needs: set[Need], meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
             sketch_name: str) -> set[str]:
    """What must still be extracted: ``forward`` (features and probabilities), ``sketch``."""
    missing = set()
    if Need.FEATURES in needs and "features" not in arrays:
        missing.add("forward")
    if (Need.SOURCE_PROBS in needs and "source_probs" not in arrays
            and meta.get("has_head", True)):
        missing.add("forward")
    if Need.GRADIENT_SKETCH in needs and sketch_name not in arrays:
        missing.add("sketch")
    return missing


_WHY_MISSING = {
    Need.FEATURES: "no features",
    Need.SOURCE_PROBS: "the model has no classification head (a feature extractor), so "
                       "there are no source-class probabilities",
    Need.GRADIENT_SKETCH: "no gradient sketch",
    Need.PROBE_FEATURES: "no probe features",
    Need.SOURCE_MEANS: "no source-domain data for this candidate (--source-data)",
}


def score_arrays(
    arrays: Mapping[str, np.ndarray], labels: np.ndarray, num_classes: int,
    scorers: Mapping[str, Scorer], timings: dict[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]], list[str]]:
    """Apply every scorer it can to ``arrays``.

    Returns the scores, the components of pool-relative scorers (normalised later
    over the candidate pool) and notes on the scorers that could not run. With
    ``timings``, the seconds each scorer took are added to it under its name.
    """
    outcomes = _score_outcomes(arrays, labels, num_classes, scorers)
    if timings is not None:
        timings.update({name: o["seconds"] for name, o in outcomes.items() if "seconds" in o})
    return _gather(outcomes)


def _score_outcomes(
    arrays: Mapping[str, np.ndarray], labels: np.ndarray, num_classes: int,
    scorers: Mapping[str, Scorer],
) -> dict[str, dict[str, Any]]:
    """Per scorer: ``{"value": float}``, ``{"components": {...}}``, ``{"note": why it
    failed}`` (each with ``seconds``), or ``{"missing": why it could not run}``."""
    import torch

    tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    outcomes: dict[str, dict[str, Any]] = {}
    computed: dict[str, float] = {}  # scalar values so far, shared with combinations
    for name, scorer in scorers.items():
        missing = [n for n in scorer.needs if n.value not in tensors]
        if missing:
            outcomes[name] = {"missing": "; ".join(_WHY_MISSING[n] for n in missing)}
            continue
        inputs = ScoreInputs(
            labels=y, num_classes=num_classes,
            features=tensors.get("features") if Need.FEATURES in scorer.needs else None,
            source_probs=tensors.get("source_probs") if Need.SOURCE_PROBS in scorer.needs
            else None,
            gradient_sketch=tensors.get("gradient_sketch")
            if Need.GRADIENT_SKETCH in scorer.needs else None,
            probe_features=tensors.get("probe_features")
            if Need.PROBE_FEATURES in scorer.needs else None,
            source_means=tensors.get("source_means") if Need.SOURCE_MEANS in scorer.needs
            else None,
            source_weights=tensors.get("source_weights") if Need.SOURCE_MEANS in scorer.needs
            else None,
            computed=computed,
        )
        began = time.perf_counter()
        try:
            value = computed[name] if name in computed else scorer.fn(inputs)
        except ScoringError as exc:
            outcomes[name] = {"note": str(exc), "seconds": time.perf_counter() - began}
            continue
        seconds = time.perf_counter() - began
        values = value if isinstance(value, Mapping) else {name: value}
        bad = {k: v for k, v in values.items() if not math.isfinite(float(v))}
        if bad:
            outcomes[name] = {"note": f"not finite ({bad})", "seconds": seconds}
        elif isinstance(value, Mapping):
            outcomes[name] = {"components": {k: float(v) for k, v in value.items()},
                              "seconds": seconds}
        else:
            outcomes[name] = {"value": float(value), "seconds": seconds}
            computed[name] = float(value)
    return outcomes


def _gather(outcomes: Mapping[str, Mapping[str, Any]]
            ) -> tuple[dict[str, float], dict[str, dict[str, float]], list[str]]:
    scores: dict[str, float] = {}
    components: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    for name, outcome in outcomes.items():
        if "value" in outcome:
            scores[name] = float(outcome["value"])
        elif "components" in outcome:
            components[name] = {k: float(v) for k, v in outcome["components"].items()}
        else:
            notes.append(f"{name}: {outcome.get('note') or outcome.get('missing')}")
    return scores, components, notes


def _input_digests(arrays: Mapping[str, np.ndarray], labels: np.ndarray, num_classes: int,
                   scorers: Mapping[str, Scorer]) -> dict[str, str]:
    """Per scorer, a digest of exactly what it reads (its arrays, labels, class count)."""
    memo: dict[str, str] = {}

    def digest(name: str) -> str:
        if name not in memo:
            array = np.ascontiguousarray(arrays[name])
            h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
            h.update(memoryview(array).cast("B"))
            memo[name] = h.hexdigest()[:20]
        return memo[name]

    base = hashlib.sha256(np.asarray(labels, dtype=np.int64).tobytes())
    base.update(str(num_classes).encode())
    out = {}
    for name, scorer in scorers.items():
        used = sorted(n.value for n in scorer.needs)
        if Need.SOURCE_MEANS in scorer.needs:
            used.append("source_weights")
        parts = [f"{u}={digest(u)}" for u in used if u in arrays]
        out[name] = hashlib.sha256((base.hexdigest() + "|".join(parts)).encode()).hexdigest()[:24]
    return out


def _score(arrays: Mapping[str, np.ndarray], sample: Sample, scorers: Mapping[str, Scorer],
           settings: EngineSettings, key: str, meta: Mapping[str, Any],
           result: CandidateResult) -> list[str]:
    """Score the candidate into ``result``, reusing the scores the cache entry holds for
    the same scorer version and inputs; returns the notes of scorers that could not run."""
    labels, num_classes = sample.labels, len(sample.class_names)
    digests = (_input_digests(arrays, labels, num_classes, scorers)
               if settings.cache is not None else {})
    held = meta.get("scores") if settings.cache is not None else None
    held = held if isinstance(held, dict) else {}
    reused = {name: held[scorer.cache_name] for name, scorer in scorers.items()
              if isinstance(record := held.get(scorer.cache_name), dict)
              and record.get("version") == scorer.version
              and record.get("inputs") == digests.get(name)}
    todo = {name: scorer for name, scorer in scorers.items() if name not in reused}
    threads = None
    if settings.pipeline is not None and "features" in arrays:
        import torch

        n, d = np.shape(arrays["features"])[:2]
        threads = scoring_threads(n, d, torch.get_num_threads())
    with torch_threads(threads):
        fresh = _score_outcomes(arrays, labels, num_classes, todo)
    result.timings.update({n: o["seconds"] for n, o in fresh.items() if "seconds" in o})
    result.cached_timings.update({n: float(r.get("seconds", 0.0)) for n, r in reused.items()})
    if settings.cache is not None:
        records = {scorers[name].cache_name:
                   {**outcome, "version": scorers[name].version, "inputs": digests[name]}
                   for name, outcome in fresh.items() if "missing" not in outcome}
        if records:
            settings.cache.store_scores(key, records)
    outcomes = {name: reused.get(name) or fresh[name] for name in scorers}
    result.scores, result.components, notes = _gather(outcomes)
    return notes


def run_candidate(
    candidate: Candidate,
    source: ModelSource,
    target: TargetDataset,
    sample: Sample,
    scorers: Mapping[str, Scorer],
    settings: EngineSettings,
    workers: Workers | None = None,
    upcoming: Callable[[], None] | None = None,
) -> CandidateResult:
    """Extract (or read from cache) and score one candidate; failures become records.

    With ``workers`` (sample sharding), every process calls this for the same
    candidate: each extracts its slice of the sample, the arrays are gathered in
    sample order, and the main process scores and shares the result. ``upcoming`` is
    called once this candidate's model is loaded (or known not to be needed): the
    moment to start loading the next one.
    """
    start = time.perf_counter()
    result = CandidateResult(candidate=candidate.id, source=candidate.source)
    key = candidate_key(candidate, target, sample, settings)
    needs = needs_of(scorers)
    sketch_name = sketch_array_name(settings.sketch)
    cached = settings.cache.load(key) if settings.cache is not None else None
    meta, arrays = cached if cached is not None else ({}, {})
    model = _LazyModel(candidate, source, settings, upcoming)
    shard = workers is not None and workers.count > 1
    try:
        missing = _missing(needs, meta, arrays, sketch_name)
        if not missing:
            model.start_next()
        if missing and shard:
            assert workers is not None
            new_meta, new_arrays = _extract_sharded(model, target, sample, settings, missing,
                                                    sketch_name, workers)
        elif missing:
            new_meta, new_arrays = _extract(model, target, sample, settings, missing,
                                            sketch_name)
        earlier = dict(meta.get("seconds", {}))
        if missing:
            ran = new_meta.get("seconds", {})
            earlier = {k: v for k, v in earlier.items() if k not in ran}
            result.timings.update(ran)
            seconds = {**meta.get("seconds", {}), **ran}
            meta, arrays = {**meta, **new_meta, "seconds": seconds}, {**arrays, **new_arrays}
            if settings.cache is not None and (not shard or workers.is_main):
                settings.cache.store(key, {k: v for k, v in meta.items() if k != "scores"},
                                     new_arrays)
        if shard and not workers.is_main:
            raise _NotMine
        if sketch_name in arrays:
            arrays = {**arrays, "gradient_sketch": arrays[sketch_name]}
        used = {"forward": Need.FEATURES in needs or Need.SOURCE_PROBS in needs,
                "sketch": Need.GRADIENT_SKETCH in needs}
        result.cached_timings.update({k: v for k, v in earlier.items() if used.get(k, True)})
        if Need.SOURCE_MEANS in needs:
            began = time.perf_counter()
            arrays = {**arrays, **_source_means(candidate, model, settings)}
            result.timings["source_domain"] = time.perf_counter() - began
        result.num_params = meta.get("num_params")
        model.release()
        if settings.keep is not None:
            settings.keep(candidate.id, {**settings.shared, **arrays})
        notes = _score({**settings.shared, **arrays}, sample, scorers, settings, key, meta,
                       result)
        if notes and not (result.scores or result.components):
            raise CandidateError("; ".join(notes))
        result.notes = [*meta.get("notes", []), *notes]
    except _NotMine:
        pass
    except CandidateError as exc:
        result.error = str(exc)
    except Exception as exc:  # a candidate must never take the run down
        result.error = f"{type(exc).__name__}: {exc}"
    model.release()
    model.start_next()
    result.cached = not model.loaded and result.error is None
    result.forward_batches = model.batches
    result.notes = [*result.notes, *model.notes]
    result.seconds = time.perf_counter() - start
    if shard:
        assert workers is not None
        result = workers.broadcast(result)
    return result


def _channels_last() -> Any:
    import torch

    return torch.channels_last


class _NotMine(Exception):
    """Raised on non-main processes once sharded extraction is done: main scores."""


def _message(exc: BaseException) -> str:
    if isinstance(exc, CandidateError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _extract_sharded(
    model: _LazyModel, target: TargetDataset, sample: Sample, settings: EngineSettings,
    missing: set[str], sketch_name: str, workers: Workers,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """This process's slice of the sample, gathered with every other process's."""
    rows = workers.my_rows(len(sample.indices))
    try:
        meta, part = _extract(model, target, sample, settings, missing, sketch_name, rows)
        outcome = [(None, meta, part, model.batches)]
    except Exception as exc:  # every process must reach the gather, failed or not
        outcome = [(_message(exc), None, None, model.batches)]
    gathered = workers.gather(outcome)
    errors = [error for error, *_ in gathered if error]
    model.batches = sum(batches for *_, batches in gathered)
    if errors:
        raise CandidateError(errors[0])
    return gathered[0][1], in_sample_order([part for _, _, part, _ in gathered])


def candidate_key(candidate: Candidate, target: TargetDataset, sample: Sample,
                  settings: EngineSettings) -> str:
    """The cache entry of ``candidate`` on ``sample`` (precisions other than fp32 apart)."""
    precision = {} if settings.precision == "fp32" else {"precision": settings.precision}
    return entry_key(candidate=candidate.identity, dataset=target.fingerprint,
                     image_column=target.image_column, sample=sample.key, **precision)


def will_load(candidate: Candidate, target: TargetDataset, sample: Sample,
              scorers: Mapping[str, Scorer], settings: EngineSettings) -> bool:
    """Whether :func:`run_candidate` will have to load ``candidate`` (its cache entry
    lacks arrays the scorers need), read from the entry's metadata only."""
    if settings.cache is None:
        return True
    held = settings.cache.peek(candidate_key(candidate, target, sample, settings))
    meta, names = held if held is not None else ({}, set())
    return bool(_missing(needs_of(scorers), meta, dict.fromkeys(names),
                         sketch_array_name(settings.sketch)))


def _loader_args(settings: EngineSettings, target: TargetDataset | None = None,
                 rows: Any = None) -> dict[str, Any]:
    args: dict[str, Any] = dict(device=settings.load.device, batch_size=settings.batch_size,
                                workers=settings.workers, pipeline=settings.pipeline)
    if target is not None and rows is not None:
        args["key"] = (target.fingerprint, target.image_column, rows_digest(rows))
    return args


def _extract(
    model: _LazyModel, target: TargetDataset, sample: Sample, settings: EngineSettings,
    missing: set[str], sketch_name: str, rows: slice = slice(None),
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from tqdm.auto import tqdm

    loaded = model.get()
    candidate = model.candidate
    meta: dict[str, Any] = {
        "candidate": candidate.id,
        "num_params": loaded.num_params,
        "source_classes": loaded.source_classes,
        "has_head": loaded.has_head,
        "notes": list(loaded.notes),
        "num_samples": int(len(sample.indices)),
    }
    arrays: dict[str, np.ndarray] = {}
    indices, labels = sample.indices[rows], sample.labels[rows]
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    if "forward" in missing:
        arrays = model.features(target, indices, candidate.id)
        seconds["forward"] = time.perf_counter() - began
    if "sketch" in missing:
        began = time.perf_counter()
        with tqdm(total=len(indices), desc=f"{candidate.id[:48]} (gradients)",
                  unit="img", leave=False, disable=not settings.progress,
                  file=sys.stderr) as bar:
            sketch, batches = extract_sketch(
                loaded, target.image, indices, labels, len(sample.class_names),
                settings.sketch, progress=bar.update, channels_last=model.channels_last,
                **_loader_args(settings, target, indices))
        arrays[sketch_name] = sketch
        model.batches += batches
        seconds["sketch"] = time.perf_counter() - began
    meta["seconds"] = seconds
    return meta, arrays


def _source_means(
    candidate: Candidate, model: _LazyModel, settings: EngineSettings
) -> dict[str, np.ndarray]:
    """Class means and weights of the candidate's features on its source-domain sample."""
    domain = settings.source_domain(candidate) if settings.source_domain else None
    if domain is None:
        return {}
    source_data, source_sample = domain
    key = entry_key(
        candidate=candidate.identity,
        dataset=source_data.fingerprint, image_column=source_data.image_column,
        sample=source_sample.key,
    )
    cached = settings.cache.load(key) if settings.cache is not None else None
    if cached is not None and "features" in cached[1]:
        features = cached[1]["features"]
    else:
        arrays = model.features(source_data, source_sample.indices,
                                f"{candidate.id} (source domain)")
        if settings.cache is not None:
            settings.cache.store(key, {"candidate": candidate.id, "source_domain": True},
                                 arrays)
        features = arrays["features"]
    labels = source_sample.labels
    counts = np.bincount(labels).astype(np.float64)
    sums = np.zeros((counts.size, features.shape[1]))
    np.add.at(sums, labels, features.astype(np.float64))
    return {"source_means": sums / counts[:, None], "source_weights": counts / counts.sum()}
