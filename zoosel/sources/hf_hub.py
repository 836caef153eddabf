"""The ``hf`` source: candidates listed from the Hugging Face Hub.

Lists with ``HfApi.list_models`` (filters, search, author, sort, limit; the exact
filters and the listing cache live in :mod:`zoosel.sources.hub_listing`) and pins
every candidate to the commit the listing returned, so a ranking names exactly
the weights it scored. timm repositories load through timm, transformers
repositories through ``AutoModel`` / ``AutoImageProcessor``; repositories of
other libraries are reported as skipped, with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from zoosel.errors import CandidateError
from zoosel.hookspecs import hookimpl
from zoosel.sources import hub_listing, loaders
from zoosel.sources.hub_listing import SORT_KEYS, SUPPORTED_LIBRARIES  # noqa: F401  (re-exported)
from zoosel.types import Candidate, ListRequest, LoadedModel, LoadSettings, Skipped


class HubSource:
    """Models on the Hugging Face Hub (or any endpoint set by ``HF_ENDPOINT``)."""

    name = "hf"
    summary = "Hugging Face Hub models (timm and transformers), pinned to their commit"

    def list_candidates(self, request: ListRequest) -> Iterable[Candidate | Skipped]:
        if not request.wants_hub_listing() or hub_listing.uses_local_cache(request):
            return  # offline, the hf-cache source lists instead
        yield from hub_listing.list_hub(self.name, request)

    def _candidate(
        self, repo_id: str, sha: str | None, library: str | None, tags: list[str]
    ) -> Candidate | Skipped:
        model = hub_listing.ListedModel(repo_id, sha, library, tags=tuple(tags))
        return hub_listing.hub_candidate(self.name, model)

    def resolve(self, ref: str) -> Candidate | Skipped:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        repo_id, _, revision = ref.partition("@")
        try:
            info = HfApi().model_info(repo_id, revision=revision or None)
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise CandidateError(
                f"cannot find {repo_id!r} on the Hub: {loaders._short(exc)}"
            ) from exc
        except Exception as exc:  # offline or unreachable: fall back to the local cache
            return self._resolve_from_cache(repo_id, revision or "main", exc)
        return self._candidate(info.id, info.sha, info.library_name, info.tags or [])

    def _resolve_from_cache(self, repo_id: str, revision: str, cause: Exception) -> Candidate:
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(repo_id, revision=revision, local_files_only=True,
                                          allow_patterns=["config.json"]))
        except Exception:
            raise CandidateError(
                f"cannot reach the Hub for {repo_id!r} ({loaders._short(cause)}) and it is "
                "not in the local cache."
            ) from cause
        library = loaders.detect_library(path)
        return Candidate(self.name, repo_id, revision=path.name, library=library)

    def load(self, candidate: Candidate, settings: LoadSettings) -> LoadedModel:
        if candidate.extra.get("custom_code") and not settings.trust_remote_code:
            raise CandidateError(
                f"{candidate.ref} needs custom code from its repository; zoosel does not "
                "run it unless you pass --trust-remote-code."
            )
        from huggingface_hub import snapshot_download

        try:
            path = snapshot_download(
                candidate.ref,
                revision=candidate.revision,
                allow_patterns=loaders.allow_patterns(settings),
                local_files_only=settings.local_files_only,
            )
        except Exception as exc:
            raise CandidateError(
                f"cannot download {candidate.ref}: {loaders._short(exc)}"
            ) from exc
        return loaders.load_dir(Path(path), settings)


@hookimpl
def register_sources(register: Any) -> None:
    register(HubSource())
