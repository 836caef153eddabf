"""The ``hf-cache`` source: timm and transformers models already in the local HF cache.

Offers what ``huggingface_hub.scan_cache_dir`` finds (``HF_HUB_CACHE``), each pinned to
its cached commit (the one ``main`` points to when several are cached). It lists
instead of the Hub with ``--from-cache``, and automatically when ``HF_HUB_OFFLINE=1``.
The Hub's listing options still apply as far as the cache can tell: author, search,
library, parameter count (read from the safetensors headers) and limit; tags, pipeline
tag and license come from the cached ``README.md`` when there is one (otherwise the
model is kept, with a note). ``--hub-sort last_modified`` puts the most recently cached
first; the other sort keys are not known offline (the models keep name order, with a
note). ``--model hf-cache:org/name[@rev]`` names one.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from zoosel.errors import CandidateError
from zoosel.hookspecs import hookimpl
from zoosel.sources import hub_listing, loaders
from zoosel.types import Candidate, ListRequest, LoadedModel, LoadSettings, Skipped

_UNKNOWN_TAGS = "tags unknown offline (no README.md cached); tag, pipeline and license " \
                "filters not checked"


def safetensors_params(files: Iterable[Path]) -> int | None:
    """Number of parameters declared in the headers of safetensors ``files``, or None."""
    total, seen = 0, False
    for path in files:
        try:
            with path.open("rb") as fh:
                (length,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(length))
        except (OSError, ValueError, struct.error):
            continue
        for name, spec in header.items():
            if name == "__metadata__" or not isinstance(spec, dict):
                continue
            count = 1
            for dim in spec.get("shape", []):
                count *= int(dim)
            total, seen = total + count, True
    return total if seen else None


def _cached_repos() -> list[Any]:
    from huggingface_hub import constants, scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(constants.HF_HUB_CACHE)
    except CacheNotFound:
        return []
    return sorted((r for r in info.repos if r.repo_type == "model"), key=lambda r: r.repo_id)


def _revision(repo: Any, wanted: str | None = None) -> Any | None:
    """The cached revision ``wanted`` (a ref or commit prefix), else the one ``main``
    points to, else the newest."""
    revisions = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
    if wanted:
        return next((r for r in revisions
                     if wanted in r.refs or r.commit_hash.startswith(wanted)), None)
    return next((r for r in revisions if "main" in r.refs), revisions[0] if revisions else None)


def _card(path: Path) -> dict[str, Any] | None:
    readme = path / "README.md"
    if not readme.is_file():
        return None
    from huggingface_hub.repocard import metadata_load

    try:
        return metadata_load(readme) or {}
    except Exception:  # a malformed card only costs the tags
        return {}


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


class HubCacheSource:
    """Models already downloaded to the local Hugging Face cache; works offline."""

    name = "hf-cache"
    summary = ("models already in the local Hugging Face cache (--from-cache; automatic "
               "with HF_HUB_OFFLINE=1)")

    def list_candidates(self, request: ListRequest) -> Iterable[Candidate | Skipped]:
        if not hub_listing.uses_local_cache(request):
            return
        limit, passed = request.hub_limit, 0
        if limit is not None and limit < 1:
            return
        for repo in self._matching(request):
            item = self._offer(repo, None, request)
            if item is None:
                continue
            yield item
            if isinstance(item, Candidate):
                passed += 1
                if limit is not None and passed >= limit:
                    return

    @staticmethod
    def _matching(request: ListRequest) -> Iterator[Any]:
        search = (request.hub_search or "").lower()
        author = (request.hub_author or "").lower()
        repos = _cached_repos()
        if request.hub_sort == "last_modified":  # newest cached revision first, as the Hub
            repos.sort(key=lambda r: max((v.last_modified for v in r.revisions), default=0.0),
                       reverse=True)
        for repo in repos:
            owner = repo.repo_id.split("/")[0].lower() if "/" in repo.repo_id else ""
            if author and owner != author:
                continue
            if search and search not in repo.repo_id.lower():
                continue
            yield repo

    def _offer(self, repo: Any, wanted: str | None,
               request: ListRequest | None) -> Candidate | Skipped | None:
        """The candidate for a cached repo, a skip, or None when ``request`` filters it out."""
        revision = _revision(repo, wanted)
        if revision is None:
            raise CandidateError(f"revision {wanted!r} of {repo.repo_id} is not in the local "
                                 "Hugging Face cache.")
        path = Path(revision.snapshot_path)
        try:
            library = loaders.detect_library(path)
            custom_code = "auto_map" in loaders.read_config(path)
        except CandidateError as exc:
            return Skipped(self.name, repo.repo_id, f"not loadable from the cache: {exc}")
        files = [p for p in path.iterdir() if p.is_file()]
        card = _card(path)
        tags = [*_as_list((card or {}).get("tags")), library]
        pipeline = (card or {}).get("pipeline_tag")
        tags += [pipeline] if pipeline else []
        tags += [f"license:{lic}" for lic in _as_list((card or {}).get("license"))]
        model = hub_listing.ListedModel(
            repo.repo_id, revision.commit_hash, library, pipeline, tuple(tags),
            params=safetensors_params(p for p in files if p.suffix == ".safetensors"),
        )
        notes: list[str] = []
        if request is not None:
            if not hub_listing.in_param_range(model.params, request):
                return None
            if request.hub_library and library != request.hub_library:
                return None
            checks = request.hub_filter or request.hub_pipeline_tag or request.hub_licenses
            if card is None and checks:
                notes.append(_UNKNOWN_TAGS)
            elif card is not None and (
                any(tag not in model.tags for tag in request.hub_filter)
                or hub_listing.judge(self.name, model, request, authed=True) is None
            ):
                return None
            if model.params is None and hub_listing.params_note(request):
                notes.append(str(hub_listing.params_note(request)))
            if request.hub_sort and request.hub_sort != "last_modified":
                notes.append(f"--hub-sort {request.hub_sort} is not known offline; cached "
                             "models are listed by name")
        if custom_code and request is not None and not request.trust_remote_code:
            return Skipped(self.name, repo.repo_id, hub_listing.CUSTOM_CODE_REASON)
        if not any(p.suffix == ".safetensors" or p.suffix in loaders.PICKLE_SUFFIXES
                   for p in files):
            return Skipped(self.name, repo.repo_id, "only its configuration is cached, not "
                                                    "its weights: select it once online")
        return Candidate(self.name, repo.repo_id, revision=revision.commit_hash,
                         library=library, extra={
                             "snapshot": str(path), "custom_code": custom_code,
                             "pipeline_tag": pipeline, "num_params": model.params,
                             "notes": notes,
                         })

    def resolve(self, ref: str) -> Candidate | Skipped:
        repo_id, _, wanted = ref.partition("@")
        repo = next((r for r in _cached_repos() if r.repo_id == repo_id), None)
        if repo is None:
            raise CandidateError(
                f"{repo_id!r} is not in the local Hugging Face cache; download it once "
                f"online (or name it hf:{repo_id})."
            )
        item = self._offer(repo, wanted or None, None)
        assert item is not None  # only a request filters out
        return item

    def load(self, candidate: Candidate, settings: LoadSettings) -> LoadedModel:
        if candidate.extra.get("custom_code") and not settings.trust_remote_code:
            raise CandidateError(
                f"{candidate.ref} needs custom code from its repository; zoosel does not "
                "run it unless you pass --trust-remote-code."
            )
        path = Path(candidate.extra.get("snapshot") or "")
        if not candidate.extra.get("snapshot") or not path.is_dir():
            resolved = self.resolve(f"{candidate.ref}@{candidate.revision or ''}")
            if isinstance(resolved, Skipped):
                raise CandidateError(f"{candidate.ref}: {resolved.reason}")
            path = Path(resolved.extra["snapshot"])
        return loaders.load_dir(path, settings)


@hookimpl
def register_sources(register: Any) -> None:
    register(HubCacheSource())
