"""Listing Hub models at Hub scale: server-side narrowing, exact client-side filters.

The Hub narrows what it can (tags, author, search, pipeline tag); what it cannot check
exactly is checked here on every listed record: the pipeline tag (a tag filter also
matches custom tags), the library, the license, the parameter count (from the
``safetensors`` field; a model without one is kept, with a note), and whether the user
can read a gated or private repository. ``--hub-limit`` counts the candidates that pass,
so pages are fetched until that many have. Listings are cached on disk for a while
(:mod:`zoosel.sources.listing_cache`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from zoosel.errors import CandidateError, UsageError
from zoosel.sources import loaders
from zoosel.sources.listing_cache import ListingCache, listing_key, resolve_ttl
from zoosel.types import Candidate, ListRequest, Skipped

SUPPORTED_LIBRARIES = ("timm", "transformers")
SORT_KEYS = ("downloads", "likes", "created_at", "last_modified", "trending_score")
EXPAND = ["sha", "library_name", "pipeline_tag", "tags", "gated", "private", "safetensors"]

_SCALES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_COUNT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmbgt]?)")
LOGIN_HINT = "set HF_TOKEN or run `hf auth login`"
CUSTOM_CODE_REASON = ("needs code from its repository, which zoosel does not run unless you "
                      "pass --trust-remote-code")


def parse_count(value: str | int) -> int:
    """A parameter count from ``5000000``, ``300K``, ``5M`` or ``1.2B``."""
    if isinstance(value, int):
        count = value
    else:
        match = _COUNT.fullmatch(value.strip().replace("_", "").lower())
        if match is None:
            raise UsageError(f"{value!r} is not a parameter count; write for example "
                             "300K, 5M or 1.2B.")
        count = round(float(match[1]) * _SCALES[match[2]])
    if count < 0:
        raise UsageError(f"a parameter count cannot be negative ({value!r}).")
    return count


def format_count(count: int | None) -> str:
    """``1234567`` as ``1.2M``; None as ``?``."""
    if count is None:
        return "?"
    for suffix, scale in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if count >= scale:
            return f"{count / scale:.1f}{suffix}"
    return str(count)


def hub_offline() -> bool:
    """Whether huggingface_hub is in offline mode (``HF_HUB_OFFLINE=1``)."""
    from huggingface_hub import constants

    return constants.is_offline_mode()


def uses_local_cache(request: ListRequest) -> bool:
    """Whether the listing comes from the local Hugging Face cache instead of the Hub."""
    return request.from_cache or (request.wants_hub_listing() and hub_offline())


@dataclass(frozen=True)
class ListedModel:
    """What the listing says about one repository (what the filters and cache need)."""

    id: str
    sha: str | None = None
    library: str | None = None
    pipeline_tag: str | None = None
    tags: tuple[str, ...] = ()
    gated: bool = False
    private: bool = False
    params: int | None = None

    @classmethod
    def from_info(cls, info: Any) -> ListedModel:
        """From a ``huggingface_hub`` ``ModelInfo``."""
        safetensors = getattr(info, "safetensors", None)
        return cls(
            id=info.id, sha=info.sha, library=info.library_name,
            pipeline_tag=info.pipeline_tag, tags=tuple(info.tags or ()),
            gated=bool(info.gated), private=bool(info.private),
            params=getattr(safetensors, "total", None),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ListedModel:
        return cls(**{**data, "tags": tuple(data.get("tags") or ())})

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tags": list(self.tags)}

    @property
    def licenses(self) -> set[str]:
        return {t.split(":", 1)[1].lower() for t in self.tags if t.startswith("license:")}

    @property
    def resolved_library(self) -> str | None:
        """``library_name``, else a supported library named in the tags."""
        return self.library or next((t for t in self.tags if t in SUPPORTED_LIBRARIES), None)


def params_note(request: ListRequest) -> str | None:
    """The note for a candidate whose parameter count is unknown, if a range was asked."""
    if request.min_params is None and request.max_params is None:
        return None
    return "parameter count unknown (no safetensors weights listed); kept despite the range"


def in_param_range(params: int | None, request: ListRequest) -> bool:
    """Whether ``params`` is in the requested range (an unknown count always is)."""
    if params is None:
        return True
    if request.min_params is not None and params < request.min_params:
        return False
    return request.max_params is None or params <= request.max_params


def hub_candidate(source: str, model: ListedModel,
                  notes: Iterable[str] = ()) -> Candidate | Skipped:
    """The candidate for a listed (or looked-up) repository, or why it is skipped."""
    library = model.resolved_library
    if library not in SUPPORTED_LIBRARIES:
        return Skipped(
            source, model.id,
            f"library {library or 'unknown'!r} is not supported "
            f"(zoosel loads {' and '.join(SUPPORTED_LIBRARIES)} models)",
        )
    return Candidate(source, model.id, revision=model.sha, library=library, extra={
        "custom_code": "custom_code" in model.tags, "pipeline_tag": model.pipeline_tag,
        "num_params": model.params, "notes": list(notes),
    })


def judge(source: str, model: ListedModel, request: ListRequest,
          authed: bool) -> Candidate | Skipped | None:
    """A listed model as a candidate, a skip with its reason, or None when the user's
    filters exclude it."""
    if request.pipeline_tags and model.pipeline_tag not in request.pipeline_tags:
        return None
    if request.hub_library and model.resolved_library != request.hub_library:
        return None
    wanted = {lic.lower() for lic in request.hub_licenses}
    if wanted and not wanted & model.licenses:
        return None
    if not in_param_range(model.params, request):
        return None
    if model.private and not authed:
        return Skipped(source, model.id, f"private repository and no token: {LOGIN_HINT}")
    if model.gated and not request.include_gated:
        return Skipped(source, model.id, "gated repository: accept its conditions on the "
                                         "Hub, then pass --include-gated")
    if model.gated and not authed:
        return Skipped(source, model.id, f"gated repository and no token: {LOGIN_HINT}")
    if "custom_code" in model.tags and not request.trust_remote_code:
        return Skipped(source, model.id, CUSTOM_CODE_REASON)
    note = params_note(request) if model.params is None else None
    return hub_candidate(source, model, [note] if note else [])


def server_query(request: ListRequest, pipeline_tag: str | None = None) -> dict[str, Any]:
    """Keyword arguments of ``HfApi.list_models``: what the Hub can narrow down itself.

    No ``limit``: it has to count the candidates that pass the client-side checks. The
    Hub takes one pipeline tag per query: ``pipeline_tag`` picks one of several asked.
    """
    tags = list(request.hub_filter)
    if request.hub_library and request.hub_library not in tags:
        tags.append(request.hub_library)
    if len(request.hub_licenses) == 1:
        tags.append(f"license:{request.hub_licenses[0].lower()}")
    query: dict[str, Any] = dict(
        filter=tags or None, search=request.hub_search, author=request.hub_author,
        pipeline_tag=pipeline_tag or request.hub_pipeline_tag, expand=list(EXPAND),
    )
    if request.hub_sort:
        query["sort"] = request.hub_sort
    return query


def _has_token() -> bool:
    from huggingface_hub import get_token

    return get_token() is not None


def _cache_key(request: ListRequest, authed: bool) -> str:
    from huggingface_hub import constants

    return listing_key(
        endpoint=constants.ENDPOINT, query=server_query(request), authed=authed,
        pipeline_tag=request.hub_pipeline_tag, library=request.hub_library,
        licenses=sorted(lic.lower() for lic in request.hub_licenses),
        min_params=request.min_params, max_params=request.max_params,
        include_gated=request.include_gated, limit=request.hub_limit,
        trust_remote_code=request.trust_remote_code,
    )


def _fetch(source: str, request: ListRequest, authed: bool) -> list[ListedModel]:
    """Page through the Hub's listing until ``hub_limit`` candidates pass the filters."""
    from huggingface_hub import HfApi

    records: list[ListedModel] = []
    passed = 0
    tags = request.pipeline_tags
    queries = ([server_query(request, tag) for tag in tags] if len(tags) > 1
               else [server_query(request)])
    try:
        api = HfApi()
        for info in _interleave([api.list_models(**query) for query in queries]):
            model = ListedModel.from_info(info)
            records.append(model)
            if isinstance(judge(source, model, request, authed), Candidate):
                passed += 1
                if request.hub_limit is not None and passed >= request.hub_limit:
                    break
    except Exception as exc:
        raise CandidateError(
            f"listing models on the Hub failed: {loaders._short(exc)}. Check your network, "
            "HF_ENDPOINT and token, name models with --model, or list the models already "
            "downloaded with --from-cache."
        ) from exc
    return records


def _interleave(listings: list[Iterable[Any]]) -> Iterator[Any]:
    """Items of several listings taken in turn (each keeps its own order), no repeats."""
    iterators = [iter(listing) for listing in listings]
    seen: set[str] = set()
    while iterators:
        for it in list(iterators):
            item = next(it, None)
            if item is None:
                iterators.remove(it)
            elif item.id not in seen:
                seen.add(item.id)
                yield item


def list_hub(source: str, request: ListRequest) -> Iterator[Candidate | Skipped]:
    """Candidates and skips of the Hub listing ``request`` asks for (cached on disk)."""
    if request.hub_limit is not None and request.hub_limit < 1:
        return
    authed = _has_token()
    ttl = resolve_ttl(request.listing_ttl)
    cache = ListingCache(request.cache_dir)
    key = _cache_key(request, authed)
    stored = cache.load(key, ttl)
    if stored is not None:
        models = [ListedModel.from_dict(r) for r in stored]
    else:
        models = _fetch(source, request, authed)
        if ttl > 0:
            with contextlib.suppress(OSError):  # a read-only cache only costs the next run
                cache.store(key, [m.to_dict() for m in models])
    passed = 0
    for model in models:
        item = judge(source, model, request, authed)
        if item is None:
            continue
        yield item
        if isinstance(item, Candidate):
            passed += 1
            if request.hub_limit is not None and passed >= request.hub_limit:
                return
