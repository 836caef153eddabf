"""Typed records that flow between sources, the engine, scorers and outputs."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from zoosel.confidence import Confidence


class Need(str, enum.Enum):
    """What a scorer asks the engine to extract."""

    FEATURES = "features"
    """Penultimate features (the input of the classification layer), shape (N, D)."""
    SOURCE_PROBS = "source_probs"
    """Softmax probabilities of the model's own (source) head, shape (N, Cs)."""
    GRADIENT_SKETCH = "gradient_sketch"
    """Randomly projected per-sample gradients of chosen layers, shape (N, k)."""
    PROBE_FEATURES = "probe_features"
    """Features of a small probe network trained on the target sample, shape (N, Dp);
    the same for every candidate."""
    SOURCE_MEANS = "source_means"
    """Class-mean features of the candidate on its source-domain data, shape (Cs, D),
    with the source class weights; only when source-domain data is given."""


@dataclass(frozen=True)
class Candidate:
    """A model to rank, as named by the source that offers it.

    ``ref`` is what the source needs to load it (a repo id, a timm name, a path);
    ``revision`` pins it (a commit sha, a content hash) and enters the cache key.
    """

    source: str
    ref: str
    revision: str | None = None
    library: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def id(self) -> str:
        """Stable display name, ``source:ref`` plus ``@revision`` when pinned."""
        rev = f"@{self.revision[:12]}" if self.revision else ""
        return f"{self.source}:{self.ref}{rev}"

    @property
    def identity(self) -> tuple[str, str, str | None]:
        """What identifies the weights, for caches: ``(source, ref, revision)``, or
        ``(source, extra["identity"], revision)`` when the revision is a content hash
        that makes the location irrelevant (a moved checkpoint still hits the cache)."""
        return (self.source, self.extra.get("identity", self.ref), self.revision)


@dataclass(frozen=True)
class Skipped:
    """A listed model zoosel will not try, with the reason shown to the user."""

    source: str
    ref: str
    reason: str

    @property
    def id(self) -> str:
        return f"{self.source}:{self.ref}"


@dataclass
class LoadedModel:
    """A candidate ready to run: the engine calls ``transform`` then ``forward``.

    ``transform(image)`` gives one image's input: a float tensor (3, H, W), or a mapping
    of names to tensors (what an image processor makes for one image); it must not change
    ``image`` in place (decoded images are shared by every candidate). The engine
    batches them with torch's default collate and moves them to the model's device, so
    ``forward(batch)`` receives a tensor (B, 3, H, W) or the same mapping batched; it
    returns ``(features, logits)``, ``logits`` being None when the model has no source
    classification head.

    ``preprocess_key`` is a stable signature of ``transform`` (see
    :mod:`zoosel.engine.preprocess`): candidates with the same key share the
    preprocessed sample within a run. None (always correct) shares nothing.
    """

    module: torch.nn.Module
    transform: Callable[[Image.Image], Any]
    forward: Callable[[Any], tuple[torch.Tensor, torch.Tensor | None]]
    num_params: int
    has_head: bool
    source_classes: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    """What the ranking should say about how this model was run (shown in its row)."""
    preprocess_key: str | None = None


@dataclass(frozen=True)
class ListRequest:
    """What the user asked every source to list. Sources read the fields they own."""

    hub_filter: tuple[str, ...] = ()
    hub_search: str | None = None
    hub_author: str | None = None
    hub_limit: int | None = None
    hub_sort: str | None = None
    hub_pipeline_tag: str | None = None
    """Exact ``pipeline_tag`` (a tag filter also matches custom tags); several, any of
    them, separated by commas."""
    hub_library: str | None = None
    hub_licenses: tuple[str, ...] = ()
    min_params: int | None = None
    max_params: int | None = None
    include_gated: bool = False
    trust_remote_code: bool = False
    """Offer listed models that need their repository's code (else they are skipped)."""
    from_cache: bool = False
    """List the models in the local Hugging Face cache instead of the Hub."""
    listing_ttl: float | None = None
    """Seconds a Hub listing is reused from disk; None: the default, 0: never."""
    cache_dir: str | None = None
    """zoosel's cache folder (None: the default)."""
    timm_patterns: tuple[str, ...] = ()
    local_dirs: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)

    @property
    def pipeline_tags(self) -> tuple[str, ...]:
        """The pipeline tags asked for (a model with any of them passes)."""
        return tuple(t for t in (self.hub_pipeline_tag or "").split(",") if t)

    def wants_hub_listing(self) -> bool:
        """Whether the user asked for a Hub listing (rather than filters alone)."""
        return bool(
            self.hub_filter or self.hub_search or self.hub_author or self.hub_pipeline_tag
            or self.hub_library or self.hub_licenses
        )

    def is_empty(self) -> bool:
        return not (
            self.wants_hub_listing() or self.from_cache or self.timm_patterns
            or self.local_dirs
        )


@dataclass
class CandidateList:
    """What a ranking would start from: the candidates, the skipped models with their
    reason, and the models or listings that failed (see :func:`zoosel.api.list_models`)."""

    candidates: list[Candidate]
    skipped: list[Skipped]
    failed: list[CandidateResult]

    def rows(self) -> list[dict[str, Any]]:
        """One row per candidate: id, source, ref, library, pipeline tag, params,
        revision and notes (what the listing could not check)."""
        return [
            {"id": c.id, "source": c.source, "ref": c.ref, "library": c.library,
             "pipeline_tag": c.extra.get("pipeline_tag"), "params": c.extra.get("num_params"),
             "revision": c.revision, "notes": list(c.extra.get("notes") or [])}
            for c in self.candidates
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidates": self.rows(),
            "skipped": [asdict(s) for s in self.skipped],
            "failed": [{"candidate": f.candidate, "source": f.source, "error": f.error}
                       for f in self.failed],
        }


@dataclass(frozen=True)
class LoadSettings:
    """Security and placement settings every source must honour when loading."""

    device: str = "cpu"
    trust_remote_code: bool = False
    allow_pickle: bool = False
    local_files_only: bool = False


@dataclass(frozen=True)
class ScoreInputs:
    """Everything a scorer may receive. Fields it did not declare are None."""

    labels: torch.Tensor
    """int64 (N,), values in 0..num_classes-1."""
    num_classes: int
    features: torch.Tensor | None = None
    """float (N, D) penultimate features."""
    source_probs: torch.Tensor | None = None
    """float (N, Cs) source-head probabilities, rows summing to 1."""
    gradient_sketch: torch.Tensor | None = None
    """float (N, k) projected per-sample gradients (their dot products approximate the
    empirical neural tangent kernel of the chosen layers)."""
    probe_features: torch.Tensor | None = None
    """float (N, Dp) features of the probe network trained on the target sample."""
    source_means: torch.Tensor | None = None
    """float (Cs, D) class-mean features of the candidate on its source domain."""
    source_weights: torch.Tensor | None = None
    """float (Cs,) share of each source class in the source sample (sums to 1)."""
    computed: dict[str, float] | None = field(default=None, compare=False, repr=False)
    """Values of other scorers already computed on these same arrays in this call, by
    name: a combination of scores reads its components here instead of recomputing them
    (and adds the ones it computes)."""


@dataclass(frozen=True)
class Scorer:
    """A selection score. Reported values are always "higher is better".

    ``raw`` names the quantity the literature reports when zoosel flips its sign.

    Pool-relative scorers (whose value depends on the other candidates, such as
    min-max normalised combinations) set ``pool_normalize``: their ``fn`` returns a
    dict of named component values per candidate, and once every candidate is
    extracted the engine calls ``pool_normalize({candidate: components})``, which
    returns ``{candidate: final score}``.
    """

    name: str
    fn: Callable[[ScoreInputs], float | dict[str, float]]
    needs: frozenset[Need]
    summary: str
    reference: str = ""
    cost: str = ""
    raw: str = ""
    pool_normalize: Callable[[dict[str, dict[str, float]]], dict[str, float]] | None = None
    version: str = "1"
    """Bump when the score's computation changes: cached scores of other versions are
    recomputed."""
    same_values_as: tuple[str, ...] = ()
    """Earlier versions whose values this one reproduces (the change was in how, not what:
    speed, rounding), shown on recorded data: benchmark results of those versions are
    not stale. Cached scores of those versions are still recomputed."""
    options: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    """Keyword arguments ``fn`` accepts, each with its allowed values (the first is the
    default); chosen with :meth:`with_options` (``--scorer-option NAME.OPTION=VALUE``)."""
    option_values: Mapping[str, str] = field(default_factory=dict, hash=False)
    """The options set by :meth:`with_options` that differ from the defaults."""

    @property
    def cache_name(self) -> str:
        """The name its cached scores are stored under: ``name``, and the options that differ
        from the defaults (``linear_probe[solver=logistic]``), so each setting keeps its own."""
        if not self.option_values:
            return self.name
        return f"{self.name}[{','.join(f'{k}={v}' for k, v in self.option_values.items())}]"

    def with_options(self, values: Mapping[str, str]) -> Scorer:
        """This scorer with ``values`` for its options.

        The values that differ from the defaults are passed to ``fn`` and appended to
        ``version``, so cached scores of one setting are never taken for another's.

        :raises UsageError: for an option or value the scorer does not declare.
        """
        from functools import partial

        from zoosel.errors import UsageError

        for key, value in values.items():
            if key not in self.options:
                known = ", ".join(sorted(self.options)) or "none"
                raise UsageError(f"scorer {self.name!r} has no option {key!r} "
                                 f"(its options: {known}).")
            if value not in self.options[key]:
                raise UsageError(f"{self.name}.{key} must be one of "
                                 f"{', '.join(self.options[key])}; got {value!r}.")
        changed = {k: v for k, v in sorted(values.items()) if v != self.options[k][0]}
        if not changed:
            return self
        tag = ",".join(f"{k}={v}" for k, v in changed.items())
        return replace(self, fn=partial(self.fn, **changed), version=f"{self.version}+{tag}",
                       option_values=changed)


@dataclass
class CandidateResult:
    """What the engine learned about one candidate, success or failure."""

    candidate: str
    source: str
    scores: dict[str, float] = field(default_factory=dict)
    components: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per-candidate components of pool-relative scores, before normalisation."""
    num_params: int | None = None
    seconds: float = 0.0
    forward_batches: int = 0
    cached: bool = False
    resumed: bool = False
    """Taken from an earlier, interrupted run of the same settings (``run_dir``)."""
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per step in this run: ``forward`` and ``sketch`` extraction,
    ``source_domain``, and one entry per scorer. Steps taken from the cache are not here
    (see ``cached_timings``)."""
    cached_timings: dict[str, float] = field(default_factory=dict)
    """Steps taken from the cache instead of being run (extraction steps and scorers),
    with the seconds they took in the run that computed them."""
    notes: list[str] = field(default_factory=list)
    """What the engine had to do differently (e.g. a smaller batch after running out of
    GPU memory)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DatasetSummary:
    """What was sampled from the target dataset, for the ranking and the card."""

    name: str
    split: str
    fingerprint: str
    num_classes: int
    num_samples: int
    per_class: int | None
    seed: int
    class_names: tuple[str, ...]
    class_counts: tuple[int, ...] = ()
    """Images actually sampled per class (fewer than ``per_class`` for small classes)."""

    def per_class_text(self) -> str:
        """See :func:`per_class_text`."""
        return per_class_text(self.per_class, self.class_counts)


def per_class_text(per_class: int | str | None, counts: Sequence[int] = ()) -> str:
    """``25``, ``all``, or ``12 (25 asked)`` / ``8-12 (25 asked)`` when classes held fewer
    images than asked for."""
    if per_class is None or per_class == "all":
        return "all"
    asked = int(per_class)
    if not counts or min(counts) >= asked:
        return str(asked)
    low, high = min(counts), max(counts)
    return f"{low if low == high else f'{low}-{high}'} ({asked} asked)"


@dataclass
class Ranking:
    """The outcome of :func:`zoosel.rank`: scored candidates, best first."""

    dataset: DatasetSummary
    scorers: list[str]
    primary: str
    results: list[CandidateResult]
    failed: list[CandidateResult]
    skipped: list[Skipped]
    seconds: float = 0.0
    pool_relative: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds of work shared by all candidates (``probe``: training RSA's probe network)."""
    confidence: Confidence | None = None
    """How sure the order is under resampling of the sample (None: not computed)."""
    scorer_options: dict[str, dict[str, str]] = field(default_factory=dict)
    """Scorer options that differ from the defaults, ``{scorer: {option: value}}``."""

    @property
    def best(self) -> CandidateResult | None:
        """The recommended candidate, or None when nothing could be scored."""
        return self.results[0] if self.results else None

    def __iter__(self) -> Iterator[CandidateResult]:
        return iter(self.results)

    def to_dict(self) -> dict[str, Any]:
        from zoosel.agreement import summarize

        return {
            "dataset": asdict(self.dataset),
            "scorers": self.scorers,
            "scorer_options": self.scorer_options,
            "primary": self.primary,
            "pool_relative": self.pool_relative,
            "ranking": [dict(rank=i + 1, **r.to_dict(), **self._confidence_row(r.candidate))
                        for i, r in enumerate(self.results)],
            "failed": [r.to_dict() for r in self.failed],
            "skipped": [asdict(s) for s in self.skipped],
            "seconds": self.seconds,
            "timings": self.timings,
            "agreement": summarize(self),
            "confidence": self.confidence.to_dict() if self.confidence is not None else None,
        }

    def _confidence_row(self, candidate: str) -> dict[str, Any]:
        if self.confidence is None:
            return {"p_best": None, "rank_interval": None}
        return self.confidence.row(candidate)
