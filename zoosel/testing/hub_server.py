"""A small, in-memory, Hugging Face Hub compatible HTTP server for tests.

Point ``HF_ENDPOINT`` at :attr:`FakeHub.url` *before* ``huggingface_hub`` is imported and the real
clients (``HfApi``, ``hf_hub_download``, ``snapshot_download``, ``HfFileSystem``,
``datasets.load_dataset``, ``timm.create_model("hf-hub:...")``, ``from_pretrained``) talk to it
instead of the public Hub::

    hub = FakeHub(port=port).start()
    sha = hub.add_model("org/tiny", {"config.json": "{}"}, library_name="timm")
    ...
    hub.stop()

What is served (a subset of the Hub's HTTP API, with the same URLs, JSON shapes and headers):

* ``GET /api/models`` and ``GET /api/datasets``: listings with ``filter`` (repeatable, every value
  must be one of the repo's tags), ``search``, ``author``, ``pipeline_tag``, ``library``, ``gated``,
  ``sort`` (+ ``direction``), ``limit``, ``full``, ``cardData``, ``config`` and ``expand``; results
  are paginated with a ``Link: <...>; rel="next"`` header (``page_size`` items per page).
* ``GET /api/{models|datasets}/{repo_id}[/revision/{revision}]``: repo info.
* ``GET /api/{models|datasets}/{repo_id}/tree/{revision}[/{path}]`` (``recursive``, ``expand``).
* ``POST /api/{models|datasets}/{repo_id}/paths-info/{revision}``.
* ``GET /api/{models|datasets}/{repo_id}/refs`` and ``.../commits/{revision}``.
* ``HEAD``/``GET /{repo_id}/resolve/{revision}/{path}`` and ``/datasets/{repo_id}/resolve/...``
  with ``X-Repo-Commit``, ``ETag``, ``Content-Length`` and ``Range`` support.

* ``POST /api/{models|datasets}/{repo_id}/preupload/{revision}`` (every file is a "regular"
  upload: no LFS or xet) and ``POST .../commit/{revision}`` (the NDJSON commit payload of
  ``HfApi.create_commit``; with ``create_pr=1`` it opens a pull request ``refs/pr/N``, see
  :meth:`FakeHub.pull_requests`). Writes need an ``Authorization`` header.
* ``POST /api/validate-yaml`` (``create_commit`` sends a ``README.md`` there first): 400 when
  its YAML header does not parse to a mapping; the Hub's schema checks are not made.

Tests make requests fail with :meth:`FakeHub.fail_next` (a status for the next requests under a
path prefix) and check tokens with :attr:`FakeHub.required_token`.

Anything else answers 404 with a JSON body and is kept in :attr:`FakeHub.unhandled`. Every
request is recorded in :attr:`FakeHub.log` as ``(method, path_with_query)``; headers (and so
tokens) are never recorded.

Access rules: a private repo is invisible (401 ``RepoNotFound``) to requests without an
``Authorization`` header; the files of a gated repo answer 401 ``GatedRepo`` without one. Any
token is accepted.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import os
import pathlib
import re
import struct
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

__all__ = ["FakeHub", "FileContent"]

#: Accepted file values: raw bytes, text (stored as UTF-8) or the path of a local file.
FileContent = bytes | str | os.PathLike

# Files stored through git-lfs on the Hub (by extension), or anything at least this large.
_LFS_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf",
    ".parquet", ".arrow", ".npz", ".npy", ".zip", ".gz", ".tar", ".png", ".jpg", ".jpeg",
)
_LFS_MIN_SIZE = 10 * 1024 * 1024
_BASE_TIME = _dt.datetime(2024, 1, 1, tzinfo=_dt.timezone.utc)
_USER = "zoosel-test"

_MODEL_EXPAND = frozenset({
    "author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt", "disabled",
    "downloads", "downloadsAllTime", "evalResults", "gated", "gguf", "inference",
    "inferenceProviderMapping", "lastModified", "library_name", "likes", "mask_token",
    "model-index", "pipeline_tag", "private", "resourceGroup", "safetensors", "sha", "siblings",
    "spaces", "tags", "transformersInfo", "trendingScore", "usedStorage", "widgetData",
})
_DATASET_EXPAND = frozenset({
    "author", "cardData", "citation", "createdAt", "description", "disabled", "downloads",
    "downloadsAllTime", "gated", "lastModified", "likes", "mainSize", "paperswithcode_id",
    "private", "resourceGroup", "sha", "siblings", "tags", "trendingScore", "usedStorage",
})
# Fields of a listing item when neither `full` nor `expand` is asked for (as on the Hub).
_MODEL_LIST_DEFAULT = (
    "_id", "id", "likes", "trendingScore", "private", "downloads", "tags", "pipeline_tag",
    "library_name", "createdAt", "modelId",
)
_MODEL_LIST_FULL = _MODEL_LIST_DEFAULT + (
    "author", "sha", "lastModified", "gated", "disabled", "siblings",
)
_MODEL_INFO = _MODEL_LIST_FULL + (
    "cardData", "config", "safetensors", "spaces", "usedStorage", "downloadsAllTime",
)
_DATASET_LIST_DEFAULT = (
    "_id", "id", "author", "sha", "lastModified", "private", "gated", "disabled", "downloads",
    "likes", "tags", "createdAt", "trendingScore",
)
_DATASET_LIST_FULL = _DATASET_LIST_DEFAULT + ("siblings", "cardData")
_DATASET_INFO = _DATASET_LIST_FULL + ("usedStorage", "downloadsAllTime", "description")

_SORT_KEYS = {
    "downloads": "downloads",
    "likes": "likes",
    "createdAt": "createdAt",
    "created_at": "createdAt",
    "lastModified": "lastModified",
    "last_modified": "lastModified",
    "trendingScore": "trendingScore",
    "trending_score": "trendingScore",
    "id": "id",
}


# --------------------------------------------------------------------------------------------
# Repository model
# --------------------------------------------------------------------------------------------


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class _Blob:
    data: bytes
    oid: str  # git object id of what git stores (the LFS pointer for LFS files)
    sha256: str | None = None  # set for LFS files
    pointer_size: int = 0

    @classmethod
    def from_bytes(cls, path: str, data: bytes) -> _Blob:
        if path.lower().endswith(_LFS_SUFFIXES) or len(data) >= _LFS_MIN_SIZE:
            sha256 = hashlib.sha256(data).hexdigest()
            pointer = (
                "version https://git-lfs.github.com/spec/v1\n"
                f"oid sha256:{sha256}\nsize {len(data)}\n"
            ).encode()
            return cls(data, _git_blob_oid(pointer), sha256, len(pointer))
        return cls(data, _git_blob_oid(data))

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def etag(self) -> str:
        return self.sha256 or self.oid


@dataclass(eq=False)
class _Commit:
    sha: str
    parent: _Commit | None
    files: dict[str, _Blob]
    date: str
    title: str
    dirs: dict[str, list[str]] = field(default_factory=dict)  # dir -> sorted child paths
    dir_oids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        children: dict[str, set[str]] = {"": set()}
        for path in self.files:
            parts = path.split("/")
            for depth in range(1, len(parts) + 1):
                parent = "/".join(parts[: depth - 1])
                child = "/".join(parts[:depth])
                children.setdefault(parent, set()).add(child)
                if depth < len(parts):
                    children.setdefault(child, set())
        self.dirs = {d: sorted(c) for d, c in children.items()}
        self.dir_oids = {}
        for d in sorted(self.dirs, key=lambda p: -p.count("/") - (1 if p else 0)):
            h = hashlib.sha1()
            for child in self.dirs[d]:
                oid = self.dir_oids[child] if child in self.dirs else self.files[child].oid
                h.update(f"{child.rsplit('/', 1)[-1]}\0{oid}\n".encode())
            self.dir_oids[d] = h.hexdigest()

    def entry_oid(self, path: str) -> str | None:
        if path in self.files:
            return self.files[path].oid
        return self.dir_oids.get(path)

    def last_change(self, path: str) -> _Commit:
        """The oldest commit of the unbroken chain (from here) where `path` is unchanged."""
        current = self
        oid = self.entry_oid(path)
        while current.parent is not None and current.parent.entry_oid(path) == oid:
            current = current.parent
        return current


@dataclass
class _Repo:
    repo_type: str  # "model" or "dataset"
    repo_id: str
    object_id: str
    created_at: str
    meta: dict[str, Any] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str | None) -> _Commit | None:
        rev = revision or "main"
        for prefix, refs in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if rev.startswith(prefix) and rev[len(prefix):] in refs:
                return self.commits[refs[rev[len(prefix):]]]
        if rev in self.branches:
            return self.commits[self.branches[rev]]
        if rev in self.tags:
            return self.commits[self.tags[rev]]
        if rev in self.commits:
            return self.commits[rev]
        if 7 <= len(rev) < 40:
            matches = [sha for sha in self.commits if sha.startswith(rev.lower())]
            if len(matches) == 1:
                return self.commits[matches[0]]
        return None

    @property
    def head(self) -> _Commit:
        return self.commits[self.branches["main"]]


def _read_card(commit: _Commit) -> dict[str, Any]:
    """Parse the YAML header of README.md, as the Hub does for `cardData`."""
    blob = commit.files.get("README.md")
    if blob is None:
        return {}
    text = blob.data.decode("utf-8", errors="replace").replace("\r\n", "\n")
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---", 4)
    if end < 0:
        return {}
    try:
        import yaml

        data = yaml.safe_load(text[4:end])
    except Exception:
        return {}
    return data if isinstance(data, dict) else {}


# The Hub's regex for a card's YAML header (as huggingface_hub.repocard.REGEX_YAML_BLOCK).
_YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")


def _validate_yaml(req: _Request) -> _Response:
    import yaml

    try:
        content = str(json.loads(req.body or b"{}").get("content") or "")
    except (ValueError, AttributeError):
        return _Response.error(400, "BadRequest", "Invalid JSON body")
    match = _YAML_BLOCK.search(content)
    problem = None
    if match is not None:
        try:
            data = yaml.safe_load(match.group(2))
        except yaml.YAMLError as exc:
            problem = f"Invalid YAML: {exc}"
        else:
            if data is not None and not isinstance(data, dict):
                problem = "The YAML metadata must be a mapping"
    if problem is not None:
        return _Response.json({"errors": [{"message": problem}], "warnings": []}, 400,
                              **{"X-Error-Message": " ".join(problem.split())})
    return _Response.json({"errors": [], "warnings": []})


def _json_default(value: Any) -> Any:
    """Dates in a card's YAML header are ISO strings in the Hub's JSON."""
    if isinstance(value, _dt.date):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _safetensors_params(commit: _Commit) -> dict[str, Any] | None:
    """Parameter counts per dtype read from the headers of the commit's safetensors files."""
    counts: dict[str, int] = {}
    for path, blob in commit.files.items():
        if not path.endswith(".safetensors") or blob.size < 8:
            continue
        (length,) = struct.unpack("<Q", blob.data[:8])
        try:
            header = json.loads(blob.data[8 : 8 + length])
        except ValueError:
            continue
        for name, spec in header.items():
            if name == "__metadata__" or not isinstance(spec, dict):
                continue
            n = 1
            for dim in spec.get("shape", []):
                n *= int(dim)
            counts[spec.get("dtype", "?")] = counts.get(spec.get("dtype", "?"), 0) + n
    if not counts:
        return None
    return {"parameters": counts, "total": sum(counts.values())}


def _config_summary(commit: _Commit) -> dict[str, Any] | None:
    blob = commit.files.get("config.json")
    if blob is None:
        return None
    try:
        config = json.loads(blob.data)
    except ValueError:
        return None
    if not isinstance(config, dict):
        return None
    summary = {k: config[k] for k in ("architectures", "model_type") if k in config}
    return summary or None


def _to_bytes(value: FileContent) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    path = pathlib.Path(value)
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    return path.read_bytes()


def _iso(moment: _dt.datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200, **headers: str) -> _Response:
        hdrs = {"Content-Type": "application/json; charset=utf-8", **headers}
        return cls(status, json.dumps(payload, default=_json_default).encode(), hdrs)

    @classmethod
    def error(cls, status: int, code: str | None, message: str, **headers: str) -> _Response:
        hdrs = dict(headers)
        if code:
            hdrs["X-Error-Code"] = code
        hdrs["X-Error-Message"] = " ".join(message.split())  # a header is one line
        return cls.json({"error": message}, status, **hdrs)


@dataclass
class _FailureRule:
    prefix: str
    status: int
    times: int | None  # None: every matching request
    method: str | None
    code: str | None
    message: str
    headers: dict[str, str]
    after: bool = False  # answer the error after carrying the request out

    def matches(self, req: _Request) -> bool:
        if self.method is not None and req.method != self.method.upper():
            return False
        return req.path.startswith(self.prefix) or unquote(req.path).startswith(self.prefix)


_DEFAULT_FAILURES: dict[int, tuple[str | None, str]] = {
    401: (None, "Invalid credentials in Authorization header"),
    403: (None, "You don't have the rights to write to this repository"),
    404: ("RepoNotFound", "Repository not found"),
    429: (None, "Too Many Requests"),
}


@dataclass
class _Request:
    method: str
    path: str  # raw (still percent-encoded) path, without the query
    query: list[tuple[str, str]]
    headers: Mapping[str, str]
    body: bytes

    @property
    def segments(self) -> list[str]:
        return [s for s in self.path.split("/") if s != ""]

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.query if k in (name, name + "[]")]

    def first(self, name: str) -> str | None:
        vals = self.values(name)
        return vals[0] if vals else None

    @property
    def authed(self) -> bool:
        auth = self.headers.get("Authorization") or ""
        return auth.lower().startswith("bearer ") and len(auth) > len("bearer ")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        hub: FakeHub = self.server.hub  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        path, _, query = self.path.partition("?")
        request = _Request(
            method=self.command,
            path=path,
            query=parse_qsl(query, keep_blank_values=True),
            headers=self.headers,
            body=body,
        )
        response = hub._dispatch(request, self.path)
        self.send_response(response.status)
        headers = dict(response.headers)
        headers.setdefault("Content-Length", str(len(response.body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    hub: FakeHub

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # the client went away; nothing worth reporting
        super().handle_error(request, client_address)


# --------------------------------------------------------------------------------------------
# The hub
# --------------------------------------------------------------------------------------------


class FakeHub:
    """An in-memory Hub serving models and datasets over HTTP on ``host:port``.

    ``port=0`` picks a free port. ``page_size`` is the number of items per page of
    ``/api/models`` and ``/api/datasets`` (small by default so that the clients' ``Link``
    header pagination is exercised); ``tree_page_size`` the same for tree listings.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        page_size: int = 2,
        tree_page_size: int = 1000,
    ) -> None:
        self.host = host
        self.port = port
        self.page_size = page_size
        self.tree_page_size = tree_page_size
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._clock = 0
        self._log: list[tuple[str, str]] = []
        self._unhandled: list[tuple[str, str]] = []
        self._errors: list[str] = []
        self._failures: list[_FailureRule] = []
        self._pulls: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.required_token: str | None = None
        """When set, a request whose ``Authorization: Bearer`` token differs gets 401."""
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FakeHub:
        """Start serving in a background thread (returns ``self``)."""
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), _Handler)
        server.hub = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"FakeHub:{self.port}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to use as ``HF_ENDPOINT``, e.g. ``http://127.0.0.1:8123``."""
        return f"http://{self.host}:{self.port}"

    # ---------------------------------------------------------------- request log

    @property
    def log(self) -> list[tuple[str, str]]:
        """Copy of the ``(method, path?query)`` of every request received, in order."""
        with self._lock:
            return list(self._log)

    @property
    def unhandled(self) -> list[tuple[str, str]]:
        """Requests that matched no known route (answered 404)."""
        with self._lock:
            return list(self._unhandled)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of requests that crashed the server (answered 500)."""
        with self._lock:
            return list(self._errors)

    def reset_log(self) -> None:
        """Forget the recorded requests, unhandled routes and errors."""
        with self._lock:
            self._log.clear()
            self._unhandled.clear()
            self._errors.clear()

    def requests(self, method: str | None = None, prefix: str = "") -> list[str]:
        """Paths (with query) of the logged requests matching ``method`` and ``prefix``."""
        return [
            p for m, p in self.log if (method is None or m == method) and p.startswith(prefix)
        ]

    # ---------------------------------------------------------------- content

    def add_model(
        self,
        repo_id: str,
        files: Mapping[str, FileContent],
        *,
        library_name: str | None = None,
        pipeline_tag: str | None = None,
        **listing: Any,
    ) -> str:
        """Create (or push a new commit to) a model repo and return the commit sha.

        ``files`` is the complete content of the new commit (path in repo -> bytes, text, or
        path of a local file). Pushing again to an existing repo makes a new commit on
        ``branch``; older commits stay resolvable by sha. Metadata given as keywords replaces the
        previous one; ``library_name``, ``pipeline_tag``, ``tags`` and ``license`` also come from
        the YAML header of a ``README.md`` when not given explicitly, and the repo's tags include
        the library name and pipeline tag, as on the Hub.

        ``listing`` takes ``tags``, ``downloads``, ``likes``, ``created_at``, ``gated``,
        ``private``, ``trending_score``, ``card_data``, ``branch`` and ``commit_message``
        (:meth:`_add_repo`). ``created_at`` defaults to a deterministic clock (2024-01-01 plus
        one minute per push), which also dates the commits. ``private`` repos are only visible
        to requests with an ``Authorization`` header; the files of ``gated`` repos likewise.
        """
        return self._add_repo("model", repo_id, files,
                              {"library_name": library_name, "pipeline_tag": pipeline_tag},
                              **listing)

    def add_dataset(self, repo_id: str, files: Mapping[str, FileContent], **listing: Any) -> str:
        """Create (or push a new commit to) a dataset repo and return the commit sha.

        Same semantics and keywords as :meth:`add_model`, less ``library_name`` and
        ``pipeline_tag``.
        """
        return self._add_repo("dataset", repo_id, files, {}, **listing)

    def _add_repo(
        self,
        repo_type: str,
        repo_id: str,
        files: Mapping[str, FileContent],
        kind_meta: dict[str, Any],
        *,
        tags: Iterable[str] | None = None,
        downloads: int = 0,
        likes: int = 0,
        created_at: str | _dt.datetime | None = None,
        gated: bool | str = False,
        private: bool = False,
        trending_score: int = 0,
        card_data: Mapping[str, Any] | None = None,
        branch: str = "main",
        commit_message: str | None = None,
    ) -> str:
        """:meth:`_push` with the listing metadata of any repo type after ``kind_meta``."""
        return self._push(
            repo_type, repo_id, files, branch=branch, commit_message=commit_message,
            created_at=created_at,
            meta=dict(
                **kind_meta, tags=list(tags or []), downloads=downloads, likes=likes,
                gated=gated, private=private, trending_score=trending_score,
                card_data=dict(card_data) if card_data is not None else None,
            ),
        )

    def add_model_from_dir(self, repo_id: str, directory: str | os.PathLike, **meta: Any) -> str:
        """:meth:`add_model` with every file under ``directory`` (relative paths, ``/``)."""
        return self.add_model(repo_id, _dir_files(directory), **meta)

    def add_dataset_from_dir(
        self, repo_id: str, directory: str | os.PathLike, **meta: Any
    ) -> str:
        """:meth:`add_dataset` with every file under ``directory``."""
        return self.add_dataset(repo_id, _dir_files(directory), **meta)

    def update_meta(self, repo_id: str, repo_type: str = "model", **meta: Any) -> None:
        """Change listing metadata (``downloads``, ``likes``, ``gated``...) without a commit."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            for key, value in meta.items():
                if key == "created_at":
                    repo.created_at = _iso(value) if isinstance(value, _dt.datetime) else value
                else:
                    repo.meta[key] = value

    def add_tag(
        self, repo_id: str, tag: str, revision: str = "main", repo_type: str = "model"
    ) -> None:
        """Create a git tag pointing at ``revision``."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            commit = repo.resolve(revision)
            if commit is None:
                raise KeyError(revision)
            repo.tags[tag] = commit.sha

    def delete_repo(self, repo_id: str, repo_type: str = "model") -> None:
        """Remove a repo (no error if it does not exist)."""
        with self._lock:
            self._repos.pop((repo_type, repo_id), None)
            self._pulls.pop((repo_type, repo_id), None)

    def clear(self) -> None:
        """Remove every repo."""
        with self._lock:
            self._repos.clear()
            self._pulls.clear()

    def commit_sha(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        """The commit sha that ``revision`` (branch, tag or sha) points to."""
        with self._lock:
            commit = self._repos[(repo_type, repo_id)].resolve(revision)
            if commit is None:
                raise KeyError(revision)
            return commit.sha

    def repo_files(
        self, repo_id: str, revision: str = "main", repo_type: str = "model"
    ) -> dict[str, bytes]:
        """The files of a repo at ``revision``."""
        with self._lock:
            commit = self._repos[(repo_type, repo_id)].resolve(revision)
            if commit is None:
                raise KeyError(revision)
            return {p: b.data for p, b in commit.files.items()}

    def _tick(self) -> str:
        self._clock += 1
        return _iso(_BASE_TIME + _dt.timedelta(minutes=self._clock))

    def _push(
        self,
        repo_type: str,
        repo_id: str,
        files: Mapping[str, FileContent],
        *,
        branch: str,
        commit_message: str | None,
        created_at: str | _dt.datetime | None,
        meta: dict[str, Any],
    ) -> str:
        if isinstance(created_at, _dt.datetime):
            created_at = _iso(created_at)
        if not repo_id or repo_id.strip("/") != repo_id or repo_id.count("/") > 1:
            raise ValueError(f"invalid repo id {repo_id!r}")
        blobs = {}
        for name, value in files.items():
            path = str(name).replace(os.sep, "/").strip("/")
            if not path or any(part in ("", ".", "..") for part in path.split("/")):
                raise ValueError(f"invalid path in repo: {name!r}")
            blobs[path] = _Blob.from_bytes(path, _to_bytes(value))
        with self._lock:
            key = (repo_type, repo_id)
            repo = self._repos.get(key)
            date = self._tick()
            if repo is None:
                object_id = hashlib.sha1(f"{repo_type}:{repo_id}".encode()).hexdigest()[:24]
                repo = _Repo(repo_type, repo_id, object_id, created_at or date)
                self._repos[key] = repo
            elif created_at is not None:
                repo.created_at = created_at
            parent = repo.resolve(branch) if branch in repo.branches else None
            h = hashlib.sha1(f"{repo_type}\0{repo_id}\0{parent.sha if parent else ''}\0".encode())
            for path in sorted(blobs):
                h.update(f"{path}\0{blobs[path].oid}\n".encode())
            sha = h.hexdigest()
            title = commit_message or ("Initial commit" if parent is None else "Update files")
            repo.commits[sha] = _Commit(sha, parent, blobs, date, title)
            repo.branches[branch] = sha
            repo.branches.setdefault("main", sha)
            repo.meta = meta
            return sha

    # ---------------------------------------------------------------- failures and writes

    def fail_next(
        self,
        path_prefix: str,
        status: int,
        times: int | None = 1,
        *,
        method: str | None = None,
        code: str | None = None,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
        after: bool = False,
    ) -> None:
        """Answer the next ``times`` requests whose path starts with ``path_prefix`` (e.g.
        ``/api/datasets/user/data/commit/``) with ``status`` (``times=None``: all of them).

        ``code`` and ``message`` become ``X-Error-Code`` and ``X-Error-Message`` (defaults as the
        Hub answers: 401 "Invalid credentials in Authorization header", 404 ``RepoNotFound``...);
        ``headers`` are added (e.g. ``{"Retry-After": "0"}``). With ``after``, the request is
        carried out first and only its answer replaced: a server that applied a commit but
        failed to say so.
        """
        default_code, default_message = _DEFAULT_FAILURES.get(status, (None, "Internal Error"))
        rule = _FailureRule(
            path_prefix, status, times, method, code if code is not None else default_code,
            message or default_message, dict(headers or {}), after,
        )
        with self._lock:
            self._failures.append(rule)

    def clear_failures(self) -> None:
        """Forget every rule added by :meth:`fail_next`."""
        with self._lock:
            self._failures.clear()

    def pull_requests(self, repo_id: str, repo_type: str = "dataset") -> list[dict[str, Any]]:
        """Pull requests opened through ``create_commit(create_pr=True)``, oldest first.

        Each is a dict with ``num``, ``ref`` (``refs/pr/N``), ``title``, ``description``,
        ``sha`` (head commit), ``base`` (the revision it was opened against), ``status``,
        ``files`` (every file at the head, path -> bytes) and ``changed`` (paths added or
        modified by the pull request).
        """
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            out = []
            for pr in self._pulls.get((repo_type, repo_id), []):
                head = repo.commits[pr["sha"]] if repo is not None else None
                base = repo.commits.get(pr["base_sha"]) if repo is not None else None
                files = {p: b.data for p, b in head.files.items()} if head is not None else {}
                changed = sorted(
                    p for p, b in (head.files.items() if head is not None else ())
                    if base is None or base.files.get(p) is None or base.files[p].oid != b.oid
                )
                out.append({
                    **{k: v for k, v in pr.items() if k != "base_sha"},
                    "files": files, "changed": changed,
                })
            return out

    def _injected_failure(self, req: _Request, after: bool = False) -> _Response | None:
        with self._lock:
            for rule in self._failures:
                if rule.after == after and rule.matches(req):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._failures.remove(rule)
                    return _Response.error(rule.status, rule.code, rule.message, **rule.headers)
            if after:
                return None
            required = self.required_token
        auth = req.headers.get("Authorization") or ""
        if required is not None and auth and auth[len("bearer "):].strip() != required:
            return _Response.error(401, None, "Invalid credentials in Authorization header")
        return None

    def _write(
        self, req: _Request, repo_type: str, repo_id: str, action: str, revision: str
    ) -> _Response:
        if not req.authed:
            return _Response.error(401, None, "Invalid username or password.")
        pr: dict[str, Any] | None = None
        with self._lock:
            if revision.startswith("refs/pr/"):
                repo = self._repos.get((repo_type, repo_id))
                if repo is None:
                    return _Response.error(
                        404, "RepoNotFound", f"Repository not found: {repo_type} {repo_id}"
                    )
                pulls = self._pulls.get((repo_type, repo_id), [])
                pr = next((p for p in pulls if p["ref"] == revision), None)
                if pr is None:
                    return _Response.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                base = repo.commits[pr["sha"]]
            else:
                found = self._lookup(req, repo_type, repo_id, revision)
                if isinstance(found, _Response):
                    return found
                repo, base = found
            if action == "preupload":
                payload = json.loads(req.body or b"{}")
                files = []
                for item in payload.get("files") or []:
                    blob = base.files.get(str(item.get("path")))
                    files.append({
                        "path": item.get("path"), "uploadMode": "regular", "shouldIgnore": False,
                        "oid": blob.oid if blob is not None else None,
                    })
                return _Response.json({"files": files, "commitOid": base.sha})
            return self._commit(req, repo, base, revision, pr)

    def _commit(
        self, req: _Request, repo: _Repo, base: _Commit, revision: str, pr: dict[str, Any] | None
    ) -> _Response:
        try:
            items = [json.loads(line) for line in req.body.splitlines() if line.strip()]
        except ValueError:
            return _Response.error(400, "BadRequest", "Invalid NDJSON commit payload")
        header: dict[str, Any] = {}
        blobs = dict(base.files)
        for item in items:
            key, value = item.get("key"), item.get("value") or {}
            path = str(value.get("path", "")).strip("/")
            if key == "header":
                header = value
                continue
            if not path or any(part in ("", ".", "..") for part in path.split("/")):
                return _Response.error(400, "BadRequest", f"Invalid path in commit: {path!r}")
            if key == "file":
                content = value.get("content", "")
                data = (base64.b64decode(content) if value.get("encoding") == "base64"
                        else str(content).encode("utf-8"))
                blobs[path] = _Blob.from_bytes(path, data)
            elif key == "deletedFile":
                if blobs.pop(path, None) is None:
                    return _Response.error(
                        404, "EntryNotFound", f"A file with this name doesn't exist: {path}"
                    )
            elif key == "deletedFolder":
                for name in [p for p in blobs if p.startswith(path + "/")]:
                    del blobs[name]
            else:
                return _Response.error(
                    400, "BadRequest", f"FakeHub does not support {key!r} commit operations"
                )
        summary = str(header.get("summary") or "").strip()
        if not summary:
            return _Response.error(400, "BadRequest", "The commit summary is required")
        parent_commit = header.get("parentCommit")
        create_pr = _truthy(req.first("create_pr"))
        if parent_commit and parent_commit != base.sha and not create_pr:
            return _Response.error(
                412, None, "A commit has happened since. Please refresh and try again."
            )
        if pr is None and not create_pr and revision not in repo.branches:
            return _Response.error(400, "BadRequest", f"Cannot commit to {revision}: not a branch")
        date = self._tick()
        h = hashlib.sha1(f"{repo.repo_type}\0{repo.repo_id}\0{base.sha}\0{date}\0".encode())
        for path in sorted(blobs):
            h.update(f"{path}\0{blobs[path].oid}\n".encode())
        sha = h.hexdigest()
        repo.commits[sha] = _Commit(sha, base, blobs, date, summary)
        prefix = f"{self.url}/datasets" if repo.repo_type == "dataset" else self.url
        repo_url = f"{prefix}/{repo.repo_id}"
        body: dict[str, Any] = {
            "success": True, "commitOid": sha, "commitUrl": f"{repo_url}/commit/{sha}",
            "hookOutput": "",
        }
        if pr is not None:
            pr["sha"] = sha
        elif create_pr:
            pulls = self._pulls.setdefault((repo.repo_type, repo.repo_id), [])
            num = len(pulls) + 1
            pr = {
                "num": num, "ref": f"refs/pr/{num}", "title": summary,
                "description": str(header.get("description") or ""), "sha": sha,
                "base": revision, "base_sha": base.sha, "status": "open", "created_at": date,
            }
            pulls.append(pr)
            body["pullRequestUrl"] = f"{repo_url}/discussions/{num}"
        else:
            repo.branches[revision] = sha
        return _Response.json(body)

    # ---------------------------------------------------------------- rendering

    def _card(self, repo: _Repo, commit: _Commit) -> dict[str, Any]:
        card = _read_card(commit)
        if repo.meta.get("card_data") is not None:
            card = {**card, **repo.meta["card_data"]}
        return card

    def _fields(self, repo: _Repo, commit: _Commit, names: Iterable[str], blobs: bool) -> dict:
        card = self._card(repo, commit)
        meta = repo.meta
        library = meta.get("library_name") or card.get("library_name")
        pipeline = meta.get("pipeline_tag") or card.get("pipeline_tag")
        tags: list[str] = []
        card_tags = card.get("tags") or []
        for tag in [
            *meta.get("tags", []), *(card_tags if isinstance(card_tags, list) else [card_tags]),
            library, pipeline,
            "safetensors" if any(p.endswith(".safetensors") for p in commit.files) else None,
            *(f"license:{lic}" for lic in _as_list(card.get("license"))),
        ]:
            if tag and str(tag) not in tags:
                tags.append(str(tag))
        gated = meta.get("gated") or False
        if gated is True:
            gated = "auto"
        author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        out: dict[str, Any] = {}
        for name in names:
            if name == "_id":
                out[name] = repo.object_id
            elif name in ("id", "modelId"):
                out[name] = repo.repo_id
            elif name == "author":
                out[name] = author
            elif name == "sha":
                out[name] = commit.sha
            elif name == "lastModified":
                out[name] = commit.date
            elif name == "createdAt":
                out[name] = repo.created_at
            elif name == "private":
                out[name] = bool(meta.get("private"))
            elif name == "gated":
                out[name] = gated
            elif name == "disabled":
                out[name] = False
            elif name in ("downloads", "downloadsAllTime", "likes"):
                out[name] = int(meta.get(name, 0) or 0)
            elif name == "trendingScore":
                out[name] = meta.get("trending_score", 0)
            elif name == "library_name":
                out[name] = library
            elif name == "pipeline_tag":
                out[name] = pipeline
            elif name == "tags":
                out[name] = tags
            elif name == "cardData":
                out[name] = card or None
            elif name == "siblings":
                out[name] = [_sibling(p, b, blobs) for p, b in sorted(commit.files.items())]
            elif name == "config":
                out[name] = _config_summary(commit)
            elif name == "safetensors":
                out[name] = _safetensors_params(commit)
            elif name == "usedStorage":
                out[name] = sum(b.size for b in commit.files.values())
            elif name == "spaces":
                out[name] = []
            elif name == "description":
                out[name] = card.get("description") or ""
            elif name in ("paperswithcode_id", "citation"):
                out[name] = card.get(name)
            else:  # valid on the Hub, but nothing to say about it here
                out[name] = None
        return {k: v for k, v in out.items() if v is not None}

    # ---------------------------------------------------------------- dispatch

    def _dispatch(self, request: _Request, target: str) -> _Response:
        with self._lock:
            self._log.append((request.method, target))
        try:
            response = self._injected_failure(request) or self._route(request)
            response = self._injected_failure(request, after=True) or response
        except Exception:
            tb = traceback.format_exc()
            with self._lock:
                self._errors.append(tb)
            return _Response.error(500, None, "Internal error in FakeHub:\n" + tb[-2000:])
        if response is None:
            with self._lock:
                self._unhandled.append((request.method, target))
            return _Response.error(404, None, f"Sorry, we can't find the page {request.path}.")
        return response

    def _route(self, req: _Request) -> _Response | None:
        segs = req.segments
        if not segs:
            return None
        if segs[0] == "api":
            if segs[1:] == ["validate-yaml"] and req.method == "POST":
                return _validate_yaml(req)
            if len(segs) >= 2 and segs[1] in ("models", "datasets"):
                repo_type = segs[1][:-1]
                if len(segs) == 2:
                    return self._listing(req, repo_type) if req.method == "GET" else None
                return self._repo_api(req, repo_type, segs[2:])
            return None
        repo_type = "model"
        rest = segs
        if segs[0] == "datasets":
            repo_type, rest = "dataset", segs[1:]
        elif segs[0] in ("spaces", "kernels", "buckets"):
            return None
        for n in (2, 1):
            if len(rest) > n and rest[n] in ("resolve", "raw") and (
                n == 1 or rest[1] not in ("resolve", "raw") or self._has(repo_type, rest[:2])
            ):
                if req.method not in ("GET", "HEAD"):
                    return None
                repo_id = "/".join(unquote(s) for s in rest[:n])
                return self._resolve(req, repo_type, repo_id, rest[n + 1 :])
        return None

    def _has(self, repo_type: str, segs: list[str]) -> bool:
        with self._lock:
            return (repo_type, "/".join(unquote(s) for s in segs)) in self._repos

    def _split_repo(self, repo_type: str, segs: list[str]) -> tuple[str, list[str]]:
        if len(segs) >= 2 and self._has(repo_type, segs[:2]):
            return "/".join(unquote(s) for s in segs[:2]), segs[2:]
        if self._has(repo_type, segs[:1]):
            return unquote(segs[0]), segs[1:]
        if len(segs) >= 2 and segs[1] not in (
            "revision", "tree", "paths-info", "refs", "commits", "preupload", "commit"
        ):
            return "/".join(unquote(s) for s in segs[:2]), segs[2:]
        return unquote(segs[0]), segs[1:]

    def _lookup(
        self, req: _Request, repo_type: str, repo_id: str, revision: str | None
    ) -> tuple[_Repo, _Commit] | _Response:
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            if repo is None or (repo.meta.get("private") and not req.authed):
                return _Response.error(
                    404 if repo is None else 401, "RepoNotFound",
                    f"Repository not found: {repo_type} {repo_id}",
                )
            commit = repo.resolve(revision)
            if commit is None:
                return _Response.error(
                    404, "RevisionNotFound", f"Invalid rev id: {revision}"
                )
            return repo, commit

    def _repo_api(self, req: _Request, repo_type: str, segs: list[str]) -> _Response | None:
        repo_id, rest = self._split_repo(repo_type, segs)
        action = rest[0] if rest else None
        if action is None or action == "revision":
            if req.method != "GET" or (action == "revision" and len(rest) != 2):
                return None
            revision = unquote(rest[1]) if action == "revision" else None
            found = self._lookup(req, repo_type, repo_id, revision)
            if isinstance(found, _Response):
                return found
            return self._info(req, *found)
        if action in ("tree", "paths-info", "commits") and len(rest) >= 2:
            revision = unquote(rest[1])
            path = "/".join(unquote(s) for s in rest[2:]).strip("/")
            if action == "tree" and req.method == "GET":
                found = self._lookup(req, repo_type, repo_id, revision)
                return found if isinstance(found, _Response) else self._tree(req, *found, path)
            if action == "paths-info" and req.method == "POST" and not path:
                found = self._lookup(req, repo_type, repo_id, revision)
                return found if isinstance(found, _Response) else self._paths_info(req, *found)
            if action == "commits" and req.method == "GET" and not path:
                found = self._lookup(req, repo_type, repo_id, revision)
                return found if isinstance(found, _Response) else self._commits(req, *found)
            return None
        if action in ("preupload", "commit") and len(rest) >= 2 and req.method == "POST":
            return self._write(req, repo_type, repo_id, action, unquote("/".join(rest[1:])))
        if action == "discussions" and len(rest) == 1 and req.method == "GET":
            found = self._lookup(req, repo_type, repo_id, None)
            return found if isinstance(found, _Response) else self._discussions(req, found[0])
        if action == "refs" and len(rest) == 1 and req.method == "GET":
            found = self._lookup(req, repo_type, repo_id, None)
            return found if isinstance(found, _Response) else self._refs(req, found[0])
        return None

    # ---------------------------------------------------------------- endpoints

    def _discussions(self, req: _Request, repo: _Repo) -> _Response:
        """The pull requests opened here (the only discussions FakeHub has), 50 a page."""
        kind, status = req.first("type"), req.first("status")
        if kind not in (None, "all", "pull_request", "discussion") or status not in (
                None, "all", "open", "closed"):
            return _Response.error(400, "BadRequest", "Invalid type or status")
        try:
            page = int(req.first("p") or 0)
        except ValueError:
            return _Response.error(400, "BadRequest", "Invalid page")
        with self._lock:
            pulls = [] if kind == "discussion" else list(
                self._pulls.get((repo.repo_type, repo.repo_id), []))
        pulls = [p for p in reversed(pulls) if status in (None, "all", p["status"])]
        items = [{
            "num": p["num"], "title": p["title"], "status": p["status"],
            "createdAt": p["created_at"], "isPullRequest": True,
            "author": {"name": "zoosel-tester"},
            "repo": {"name": repo.repo_id, "type": repo.repo_type},
        } for p in pulls[page * 50:(page + 1) * 50]]
        return _Response.json({"discussions": items, "count": len(pulls), "start": page * 50,
                               "numClosedDiscussions": 0})

    def _listing(self, req: _Request, repo_type: str) -> _Response:
        filters = [f for v in req.values("filter") for f in v.split(",") if f]
        searches = [s.lower() for s in req.values("search") if s]
        author = req.first("author")
        pipeline_tag = req.first("pipeline_tag")
        library = req.first("library")
        gated = req.first("gated")
        expand = req.values("expand")
        allowed = _MODEL_EXPAND if repo_type == "model" else _DATASET_EXPAND
        bad = [e for e in expand if e not in allowed]
        if bad:
            return _Response.error(400, "BadRequest", f"Invalid expand value(s): {bad}")
        if expand and (_truthy(req.first("full")) or _truthy(req.first("cardData"))):
            return _Response.error(400, "BadRequest", "`expand` cannot be combined with `full`")
        sort = req.first("sort")
        if sort is not None and sort not in _SORT_KEYS:
            return _Response.error(400, "BadRequest", f"Invalid sort key: {sort}")
        limit_raw = req.first("limit")
        try:
            limit = int(limit_raw) if limit_raw else None
            offset = int(req.first("cursor") or 0)
        except ValueError:
            return _Response.error(400, "BadRequest", "Invalid limit or cursor")

        if expand:
            names: tuple[str, ...] = ("_id", "id", *expand)
        elif _truthy(req.first("full")):
            names = _MODEL_LIST_FULL if repo_type == "model" else _DATASET_LIST_FULL
        else:
            names = _MODEL_LIST_DEFAULT if repo_type == "model" else _DATASET_LIST_DEFAULT
        if _truthy(req.first("cardData")):
            names = (*names, "cardData")
        if _truthy(req.first("config")):
            names = (*names, "config")
        needed = set(names) | {"tags", "library_name", "pipeline_tag", "gated"}
        if sort:
            needed.add(_SORT_KEYS[sort])

        with self._lock:
            repos = [
                r for (t, _), r in self._repos.items()
                if t == repo_type and (req.authed or not r.meta.get("private"))
            ]
            items = []
            for repo in repos:
                full = self._fields(repo, repo.head, needed, blobs=False)
                if any(f not in full["tags"] for f in filters):
                    continue
                if any(s not in repo.repo_id.lower() for s in searches):
                    continue
                if author and repo.repo_id.split("/")[0].lower() != author.lower():
                    continue
                if pipeline_tag and full.get("pipeline_tag") != pipeline_tag:
                    continue
                if library and full.get("library_name") != library:
                    continue
                if gated is not None and bool(full.get("gated")) != _truthy(gated):
                    continue
                items.append((repo, full))
        if sort:
            key = _SORT_KEYS[sort]
            descending = req.first("direction") != "1"
            items.sort(key=lambda it: it[1].get(key) or 0, reverse=descending)
        if limit is not None:
            items = items[: max(limit, 0)]
        page = items[offset : offset + self.page_size]
        body = []
        for repo, _ in page:
            with self._lock:
                body.append(self._fields(repo, repo.head, names, blobs=False))
        headers = {}
        if offset + self.page_size < len(items):
            query = [(k, v) for k, v in req.query if k != "cursor"]
            query.append(("cursor", str(offset + self.page_size)))
            headers["Link"] = f'<{self.url}{req.path}?{urlencode(query)}>; rel="next"'
        return _Response.json(body, **headers)

    def _info(self, req: _Request, repo: _Repo, commit: _Commit) -> _Response:
        expand = req.values("expand")
        allowed = _MODEL_EXPAND if repo.repo_type == "model" else _DATASET_EXPAND
        bad = [e for e in expand if e not in allowed]
        if bad:
            return _Response.error(400, "BadRequest", f"Invalid expand value(s): {bad}")
        if expand:
            names: Iterable[str] = ("_id", "id", *expand)
        else:
            names = _MODEL_INFO if repo.repo_type == "model" else _DATASET_INFO
        with self._lock:
            return _Response.json(
                self._fields(repo, commit, names, blobs=_truthy(req.first("blobs")))
            )

    def _entry(self, commit: _Commit, path: str, expand: bool) -> dict[str, Any]:
        if path in commit.files:
            blob = commit.files[path]
            entry: dict[str, Any] = {"type": "file", "oid": blob.oid, "size": blob.size}
            if blob.sha256:
                entry["lfs"] = {
                    "oid": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size
                }
        else:
            entry = {"type": "directory", "oid": commit.dir_oids[path], "size": 0}
        entry["path"] = path
        if expand:
            last = commit.last_change(path)
            entry["lastCommit"] = {"id": last.sha, "title": last.title, "date": last.date}
            if entry["type"] == "file":
                entry["securityFileStatus"] = {
                    "status": "safe", "avScan": {"virusFound": False}, "pickleImportScan": None,
                }
        return entry

    def _tree(self, req: _Request, repo: _Repo, commit: _Commit, path: str) -> _Response:
        if path not in commit.dirs:
            return _Response.error(
                404, "EntryNotFound", f"{path} does not exist on {commit.sha}",
                **{"X-Repo-Commit": commit.sha},
            )
        recursive = _truthy(req.first("recursive"))
        expand = _truthy(req.first("expand"))
        paths: list[str] = []
        stack = list(reversed(commit.dirs[path]))
        while stack:
            child = stack.pop()
            paths.append(child)
            if recursive and child in commit.dirs:
                stack.extend(reversed(commit.dirs[child]))
        try:
            offset = int(req.first("cursor") or 0)
        except ValueError:
            return _Response.error(400, "BadRequest", "Invalid cursor")
        size = min(self.tree_page_size, 50) if expand else self.tree_page_size
        body = [self._entry(commit, p, expand) for p in paths[offset : offset + size]]
        headers = {}
        if offset + size < len(paths):
            query = [(k, v) for k, v in req.query if k != "cursor"]
            query.append(("cursor", str(offset + size)))
            headers["Link"] = f'<{self.url}{req.path}?{urlencode(query)}>; rel="next"'
        return _Response.json(body, **headers)

    def _paths_info(self, req: _Request, repo: _Repo, commit: _Commit) -> _Response:
        ctype = (req.headers.get("Content-Type") or "").lower()
        if "json" in ctype:
            payload = json.loads(req.body or b"{}")
            paths = payload.get("paths") or []
            paths = [paths] if isinstance(paths, str) else list(paths)
            expand = bool(payload.get("expand"))
        else:
            form = parse_qsl(req.body.decode("utf-8"), keep_blank_values=True)
            paths = [v for k, v in form if k in ("paths", "paths[]")]
            expand = any(_truthy(v) for k, v in form if k == "expand")
        out = []
        for raw in paths:
            path = raw.strip("/")
            if path in commit.files or (path and path in commit.dirs):
                out.append(self._entry(commit, path, expand))
        return _Response.json(out)

    def _commits(self, req: _Request, repo: _Repo, commit: _Commit) -> _Response:
        out = []
        current: _Commit | None = commit
        while current is not None:
            out.append({
                "id": current.sha, "title": current.title, "message": "",
                "date": current.date, "authors": [{"user": _USER}],
            })
            current = current.parent
        return _Response.json(out)

    def _refs(self, req: _Request, repo: _Repo) -> _Response:
        def refs(kind: str, mapping: dict[str, str]) -> list[dict[str, str]]:
            return [
                {"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": s}
                for n, s in sorted(mapping.items())
            ]

        body: dict[str, Any] = {
            "branches": refs("heads", repo.branches),
            "converts": [],
            "tags": refs("tags", repo.tags),
        }
        if _truthy(req.first("include_prs")):
            body["pullRequests"] = [
                {"name": str(pr["num"]), "ref": pr["ref"], "targetCommit": pr["sha"]}
                for pr in self._pulls.get((repo.repo_type, repo.repo_id), [])
            ]
        return _Response.json(body)

    def _resolve(
        self, req: _Request, repo_type: str, repo_id: str, rest: list[str]
    ) -> _Response:
        if not rest:
            return _Response.error(400, "BadRequest", "Missing revision")
        revision = unquote(rest[0])
        path = "/".join(unquote(s) for s in rest[1:])
        found = self._lookup(req, repo_type, repo_id, revision)
        if isinstance(found, _Response):
            return found
        repo, commit = found
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        blob = commit.files.get(path)
        if blob is None:
            return _Response.error(
                404, "EntryNotFound", f"{path} does not exist on {revision}", **headers
            )
        if repo.meta.get("gated") and not req.authed:
            return _Response.error(
                401, "GatedRepo",
                f"Access to {repo_type} {repo_id} is restricted. You must have access to it "
                "and be authenticated to access it. Please log in.",
                **headers,
            )
        name = path.rsplit("/", 1)[-1]
        headers.update({
            "ETag": f'"{blob.etag}"',
            "Content-Type": _content_type(path),
            "Content-Disposition": (
                f"inline; filename*=UTF-8''{quote(name)}; filename=\"{quote(name)}\";"
            ),
            "Cache-Control": "no-cache",
        })
        if blob.sha256:
            headers["X-Linked-Etag"] = f'"{blob.sha256}"'
            headers["X-Linked-Size"] = str(blob.size)
        data = blob.data
        range_header = req.headers.get("Range")
        if range_header:
            parsed = _parse_range(range_header, len(data))
            if parsed is None:
                headers["Content-Range"] = f"bytes */{len(data)}"
                return _Response.error(416, None, "Range Not Satisfiable", **headers)
            start, end = parsed
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return _Response(206, data[start : end + 1], headers)
        return _Response(200, data, headers)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse a single ``bytes=`` range; ``None`` when it cannot be satisfied."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                return None
            return max(size - length, 0), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


def _content_type(path: str) -> str:
    lower = path.lower()
    for suffix, ctype in (
        (".json", "application/json"), (".md", "text/markdown; charset=utf-8"),
        (".txt", "text/plain; charset=utf-8"), (".png", "image/png"), (".jpg", "image/jpeg"),
        (".jpeg", "image/jpeg"), (".csv", "text/csv; charset=utf-8"),
    ):
        if lower.endswith(suffix):
            return ctype
    return "application/octet-stream"


def _sibling(path: str, blob: _Blob, blobs: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"rfilename": path}
    if blobs:
        entry["size"] = blob.size
        entry["blobId"] = blob.oid
        if blob.sha256:
            entry["lfs"] = {
                "size": blob.size, "sha256": blob.sha256, "pointerSize": blob.pointer_size
            }
    return entry


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _dir_files(directory: str | os.PathLike) -> dict[str, FileContent]:
    root = pathlib.Path(directory)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory")
    files: dict[str, FileContent] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            rel = path.relative_to(root).as_posix()
            if rel.startswith(".cache/") or "/.git/" in f"/{rel}":
                continue
            files[rel] = path
    return files
