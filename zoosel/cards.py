"""Ranking cards: a ranking as markdown with YAML front matter, plus the same as JSON.

The front matter (always written, whatever the template) is what programs read: the
dataset and its sample, every candidate with its scores and ranks, the recommended model,
the scorers with their references, zoosel's version and the time the ranking took. The
body below it is rendered from a :class:`string.Template` that a user can replace; see
:data:`TEMPLATE_FIELDS` for the ``$names`` it may use.

:func:`push_card` uploads a written card and its JSON to a Hub repository, as a pull
request by default; with a plan made by ``plan_upload(..., metadata=True)`` the same commit
also sets the ``zoosel`` key of the repository's ``README.md`` metadata (see
:func:`card_metadata` and :func:`merged_readme`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from zoosel import __version__
from zoosel.errors import (
    HubAuthError,
    HubConnectionError,
    HubError,
    HubNotFoundError,
    HubPermissionError,
    HubRateLimitError,
    HubServerError,
    HubTimeoutError,
    UsageError,
)
from zoosel.types import Ranking, per_class_text

DEFAULT_TEMPLATE = """\
# Model ranking for $dataset

zoosel ranked $num_candidates pre-trained models for **$dataset** (split `$split`,
$num_classes classes, $num_samples images: $per_class per class, seed $seed) without
fine-tuning any of them. Sorted by `$sort_by`; every score is higher-is-better.

**Recommended: `$recommended`**
$confidence
$table

## Scorers

$scorers
$notes
Made with zoosel $version in $seconds on $generated_at.
"""
"""The body of a card when no template is given."""

TEMPLATE_FIELDS = (
    "dataset", "split", "fingerprint", "classes", "num_classes", "num_samples", "per_class",
    "seed", "sort_by", "recommended", "num_candidates", "table", "scorers", "notes", "version",
    "seconds", "generated_at", "confidence",
)
"""The ``$names`` a card template may use."""

CARD_DIR_IN_REPO = "zoosel"
"""Folder of the repository the card and its JSON are uploaded to."""

METADATA_KEY = "zoosel"
"""The key of the repository card's YAML metadata that holds the ranking's summary."""
README_IN_REPO = "README.md"
TOP_CANDIDATES = 10
"""Candidates listed in the metadata summary, best first."""

RETRIES = 3
"""Further attempts of an upload answered 429 or 5xx."""
BACKOFF_SECONDS = 2.0
"""Wait before the first retry; doubled at each further one."""
MAX_BACKOFF_SECONDS = 60.0

_TOKEN_PATTERN = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")


# ------------------------------------------------------------------------------- rendering


def card_json(ranking: Ranking, *, generated_at: str | None = None) -> dict[str, Any]:
    """The card's metadata plus the full ranking (``ranking``, as :meth:`Ranking.to_dict`
    with non-finite numbers as null)."""
    return {**_metadata(ranking, generated_at), "ranking": _clean(ranking.to_dict())}


def render_card(ranking: Ranking, template: str | os.PathLike | None = None, *,
                generated_at: str | None = None) -> str:
    """The card: YAML front matter, then ``template`` (the template's text as a ``str``, or
    a :class:`~pathlib.Path` to read it from; default :data:`DEFAULT_TEMPLATE`) rendered
    with :data:`TEMPLATE_FIELDS`. An unknown ``$name`` is a :class:`UsageError`."""
    import yaml

    meta = _metadata(ranking, generated_at)
    text = _template_text(template)
    try:
        body = string.Template(text).substitute(_fields(ranking, meta))
    except KeyError as exc:
        raise UsageError(f"the card template uses ${exc.args[0]}, which is not a card field; "
                         f"known: {', '.join(TEMPLATE_FIELDS)}.") from None
    except ValueError as exc:
        raise UsageError(f"the card template is invalid ({exc}); write $$ for a dollar "
                         "sign.") from None
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=100)
    return redact(f"---\n{front}---\n\n{body.rstrip()}\n")


def write_card(ranking: Ranking, path: str | os.PathLike,
               template: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write the card to ``path`` (markdown) and its JSON next to it (same name, ``.json``).

    Both are written to a temporary file first and renamed into place. Returns the two paths.
    """
    md_path = Path(path)
    if md_path.suffix.lower() == ".json":
        raise UsageError(f"the card {md_path} must be a markdown file (.md); its JSON is "
                         "written next to it.")
    json_path = md_path.with_suffix(".json")
    generated_at = _now()
    card = render_card(ranking, template, generated_at=generated_at)
    data = redact(json.dumps(card_json(ranking, generated_at=generated_at), indent=2) + "\n")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    for target, text in ((md_path, card), (json_path, data)):
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    return md_path, json_path


def redact(text: str) -> str:
    """``text`` with any Hugging Face token (the configured one, or anything shaped like
    one) replaced by ``[redacted]``."""
    for token in _known_tokens():
        text = text.replace(token, "[redacted]")
    return _TOKEN_PATTERN.sub("[redacted]", text)


def _known_tokens() -> list[str]:
    tokens = {os.environ.get(name, "") for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    try:
        from huggingface_hub import get_token

        tokens.add(get_token() or "")
    except Exception:  # a broken token file must not stop a card from being written
        pass
    return sorted((t.strip() for t in tokens if len(t.strip()) >= 8), key=len, reverse=True)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _template_text(template: str | os.PathLike | None) -> str:
    if template is None:
        return DEFAULT_TEMPLATE
    if isinstance(template, os.PathLike):
        try:
            return Path(template).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the card template {template}: {exc.strerror}.") \
                from None
    return template


def _finite(value: Any) -> float | None:
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def _score_ranks(ranking: Ranking) -> dict[str, dict[str, int]]:
    """``{candidate: {scorer: rank}}``, 1 = best; ties share the better rank."""
    out: dict[str, dict[str, int]] = {r.candidate: {} for r in ranking.results}
    for name in ranking.scorers:
        values = [(r.candidate, _finite(r.scores.get(name))) for r in ranking.results]
        finite = sorted((v for _, v in values if v is not None), reverse=True)
        for candidate, value in values:
            if value is not None:
                out[candidate][name] = finite.index(value) + 1
    return out


def _metadata(ranking: Ranking, generated_at: str | None) -> dict[str, Any]:
    from zoosel.api import list_scorers

    known = list_scorers()
    d = ranking.dataset
    ranks = _score_ranks(ranking)
    best = ranking.best
    return {
        "zoosel_version": __version__,
        "generated_at": generated_at or _now(),
        "seconds": round(float(ranking.seconds), 3),
        "dataset": {
            "id": d.name, "split": d.split, "fingerprint": d.fingerprint,
            "num_classes": d.num_classes, "classes": list(d.class_names),
            "num_samples": d.num_samples,
            "per_class": d.per_class if d.per_class is not None else "all", "seed": d.seed,
            "class_counts": list(d.class_counts),
        },
        "sort_by": ranking.primary,
        "recommended": best.candidate if best is not None else None,
        "scorers": [
            {"name": name,
             "reference": known[name].reference if name in known else "",
             "pool_relative": name in ranking.pool_relative,
             **({"options": ranking.scorer_options[name]}
                if ranking.scorer_options.get(name) else {})}
            for name in ranking.scorers
        ],
        "candidates": [
            {"rank": i, "id": r.candidate, "source": r.source, "parameters": r.num_params,
             "scores": {s: _finite(r.scores.get(s)) for s in ranking.scorers},
             "score_ranks": ranks[r.candidate], "seconds": round(float(r.seconds), 3),
             "cached": r.cached, "notes": list(r.notes),
             **(ranking.confidence.row(r.candidate) if ranking.confidence is not None else {})}
            for i, r in enumerate(ranking.results, 1)
        ],
        **({"confidence": ranking.confidence.to_dict()} if ranking.confidence is not None
           else {}),
        "failed": [{"id": r.candidate, "source": r.source, "error": r.error}
                   for r in ranking.failed],
        "skipped": [{"id": s.id, "reason": s.reason} for s in ranking.skipped],
    }


def _params(n: int | None) -> str:
    from zoosel.formats import _params as fmt

    return fmt(n)


def _fields(ranking: Ranking, meta: Mapping[str, Any]) -> dict[str, str]:
    data = meta["dataset"]
    header = ["rank", "candidate", "source", "params",
              *(f"{s} (rank)" for s in ranking.scorers)]
    rows = []
    for c in meta["candidates"]:
        cells = [str(c["rank"]), f"`{c['id']}`", c["source"], _params(c["parameters"])]
        for s in ranking.scorers:
            value = c["scores"][s]
            cells.append("-" if value is None else f"{value:.4f} ({c['score_ranks'][s]})")
        rows.append(cells)
    table = "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
    )
    scorers = "\n".join(
        f"- `{s['name']}`"
        + "".join(f" ({k}={v})" for k, v in (s.get("options") or {}).items())
        + (" (pool-relative: depends on the other candidates)" if s["pool_relative"] else "")
        + (f": {s['reference']}" if s["reference"] else "")
        for s in meta["scorers"]
    )
    notes = [f"- failed `{f['id']}`: {f['error']}" for f in meta["failed"]]
    notes += [f"- skipped `{s['id']}`: {s['reason']}" for s in meta["skipped"]]
    row_notes = [f"- `{c['id']}`: {n}" for c in meta["candidates"] for n in c.get("notes", [])]
    return {
        "dataset": data["id"], "split": data["split"], "fingerprint": data["fingerprint"],
        "classes": ", ".join(data["classes"]), "num_classes": str(data["num_classes"]),
        "num_samples": str(data["num_samples"]),
        "per_class": per_class_text(data["per_class"], data.get("class_counts") or ()),
        "seed": str(data["seed"]), "sort_by": meta["sort_by"],
        "recommended": meta["recommended"] or "(none)",
        "num_candidates": str(len(meta["candidates"])), "table": table, "scorers": scorers,
        "notes": (("\n## Notes\n\n" + "\n".join(row_notes) + "\n") if row_notes else "")
        + (("\n## Not ranked\n\n" + "\n".join(notes) + "\n") if notes else ""),
        "version": meta["zoosel_version"], "seconds": f"{meta['seconds']:.1f}s",
        "generated_at": meta["generated_at"], "confidence": _confidence_line(ranking),
    }


def _confidence_line(ranking: Ranking) -> str:
    """The card's sentence on how sure the recommendation is (empty when not computed)."""
    conf = ranking.confidence
    leader = conf.leader if conf is not None else None
    if conf is None or leader is None:
        return ""
    low, high = conf.rank_interval[leader]
    text = (f"\nConfidence: over {conf.replicates} resamples of the per-class sample, "
            f"re-scored by `{conf.score}`, the recommended model comes first in "
            f"{conf.p_best[leader]:.0%} of them (90% rank interval "
            f"{low if low == high else f'{low}-{high}'}).")
    if conf.indistinguishable():
        text += f" **Note: {conf.indistinguishable_text()}.**"
    return text + "\n"


# ---------------------------------------------------------------------- README metadata
#
# The ranking's summary goes under zoosel's own key of the repository card's metadata:
# ``model-index`` / eval results are a model-card convention about a model's results on
# datasets, which a dataset card has no use for (and the Hub does not read there).


def card_metadata(card: Mapping[str, Any], card_path: str | None = None) -> dict[str, Any]:
    """A compact summary of a ranking for the :data:`METADATA_KEY` key of a repository
    card's YAML metadata.

    ``card`` is the card's JSON (:func:`card_json`) or its front matter; ``card_path`` is
    where the card lies in the repository. The summary holds the recommended model, the
    score sorted by, the scorers with their references, the best :data:`TOP_CANDIDATES`
    candidates (id, revision, rank and score sorted by), the dataset's split, sample and
    fingerprint, and zoosel's version. On a dataset card zoosel keeps this under its own key
    rather than ``model-index`` (eval results), which is a model-card convention.
    """
    sort_by = card.get("sort_by")
    data = card.get("dataset") or {}
    candidates = list(card.get("candidates") or [])
    return {
        "version": card.get("zoosel_version"),
        "generated_at": card.get("generated_at"),
        "card": card_path,
        "recommended": card.get("recommended"),
        "sort_by": sort_by,
        "scorers": [{"name": s.get("name"), "reference": s.get("reference") or ""}
                    for s in card.get("scorers") or []],
        "dataset": {key: data.get(key) for key in ("split", "per_class", "seed", "fingerprint")},
        "num_candidates": len(candidates),
        "candidates": [
            {"rank": c.get("rank", i), "id": c.get("id"), "revision": _revision(c.get("id")),
             "score": _finite((c.get("scores") or {}).get(sort_by))}
            for i, c in enumerate(candidates[:TOP_CANDIDATES], 1)
        ],
    }


def _revision(candidate_id: Any) -> str | None:
    """The revision a candidate id is pinned to (``SOURCE:REF@REVISION``), if any."""
    ref = str(candidate_id or "").partition(":")[2] or str(candidate_id or "")
    _, at, revision = ref.rpartition("@")
    return revision if at and revision else None


def merged_readme(existing: str | None, metadata: Mapping[str, Any]) -> str:
    """``existing`` (a README.md's text; None: there is none) with each key of ``metadata``
    set in its YAML front matter, replacing that key if present.

    The front matter is found and parsed as huggingface_hub does (its ``REGEX_YAML_BLOCK``).
    Only the lines of the keys set are rewritten, so every other key keeps its exact text,
    and the markdown body and the line endings are untouched. Should the result not parse
    back to the old metadata plus the new keys (YAML anchors shared with the replaced key,
    a flow-style mapping), the whole front matter is dumped again with huggingface_hub's
    ``yaml_dump``: same values, new formatting. Without a README, a minimal one is made.
    """
    import yaml

    if existing is None:
        return (f"---\n{_yaml_text(metadata)}---\n\n"
                f"Model rankings made with zoosel are in "
                f"`{CARD_DIR_IN_REPO}/`.\n")
    empty = re.match(r"\s*---(\r\n|\r|\n)---[ \t]*(?:\r\n|\n|$)", existing)
    match = None if empty else _front_matter_match(existing)
    first_break = re.search(r"\r\n|\n|\r", existing)
    newline = first_break.group(0) if first_break else "\n"
    block = _yaml_text(metadata).replace("\n", newline)
    if match is None:
        # No front matter, or an empty one (which the Hub's regex does not see either).
        rest = existing[empty.end():] if empty else existing
        return f"---{newline}{block}---{newline}{rest}"
    old_yaml = match.group(2)
    try:
        old = yaml.safe_load(old_yaml)
    except yaml.YAMLError as exc:
        raise UsageError(f"the YAML metadata of the repository's {README_IN_REPO} does not "
                         f"parse ({exc}); fix it, or push without --card-metadata.") from None
    old = {} if old is None else old
    if not isinstance(old, dict):
        raise UsageError(f"the YAML metadata of the repository's {README_IN_REPO} is not a "
                         "mapping; fix it, or push without --card-metadata.")
    expected = {**old, **yaml.safe_load(block)}
    new_yaml = _set_keys(old_yaml, metadata, block, newline)
    merged = existing[:match.start(2)] + new_yaml + existing[match.end(2):]
    try:
        check = _front_matter_match(merged)
        same = (check is not None and yaml.safe_load(check.group(2)) == expected
                and merged[check.end():] == existing[match.end():])
    except yaml.YAMLError:
        same = False
    if same:
        return merged
    from huggingface_hub.utils import yaml_dump

    dumped = yaml_dump(expected, sort_keys=False, line_break=newline)
    return f"{existing[:match.start()]}---{newline}{dumped}---{newline}{existing[match.end():]}"


def _set_keys(old_yaml: str, metadata: Mapping[str, Any], block: str, newline: str) -> str:
    """``old_yaml`` with the top-level entries of ``metadata``'s keys removed and ``block``
    put where the first of them was (else at the end)."""
    lines = old_yaml.splitlines(keepends=True)
    names = "|".join(re.escape(k) for k in metadata)
    key_line = re.compile(rf"""^(?:{names}|"(?:{names})"|'(?:{names})')[ \t]*:(?:[ \t]|$)""")
    out: list[str] = []
    at: int | None = None
    i = 0
    while i < len(lines):
        if not key_line.match(lines[i].rstrip("\r\n")):
            out.append(lines[i])
            i += 1
            continue
        at = len(out) if at is None else at
        end = i + 1
        # The entry goes on while lines are indented, blank, or a top-level "- " sequence
        # item (YAML lets a key's list start at the key's own indentation).
        while end < len(lines) and (not lines[end].strip()
                                    or lines[end][0] in " \t-"):
            end += 1
        while end > i + 1 and not lines[end - 1].strip():  # blank lines belong to what follows
            end -= 1
        i = end
    if at is None:
        sep = newline if old_yaml and not old_yaml.endswith(("\n", "\r")) else ""
        return old_yaml + sep + block.removesuffix(newline)
    head, tail = "".join(out[:at]), "".join(out[at:])
    # Front matter ends without a line break of its own (the regex leaves it to "---").
    return head + (block + tail if tail else block.removesuffix(newline))


def _yaml_text(metadata: Mapping[str, Any]) -> str:
    import yaml

    return redact(yaml.safe_dump(_plain(dict(metadata)), sort_keys=False, allow_unicode=True,
                                 width=100))


def _plain(obj: Any) -> Any:
    """``obj`` with mappings as dicts and tuples as lists, as YAML reads them back."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _front_matter_match(text: str) -> re.Match[str] | None:
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    return REGEX_YAML_BLOCK.search(text)


# ------------------------------------------------------------------------------- upload


@dataclass(frozen=True)
class UploadFile:
    local: Path
    path_in_repo: str
    size: int


@dataclass(frozen=True)
class UploadPlan:
    """What :func:`push_card` uploads, and where."""

    repo_id: str
    repo_type: str
    create_pr: bool
    files: tuple[UploadFile, ...]
    metadata: Mapping[str, Any] | None = None
    """The summary to set under :data:`METADATA_KEY` in the repository's README.md, which
    :func:`push_card` reads from the main branch and adds to the same commit; None leaves
    the README alone."""
    local_paths: tuple[str, ...] = ()
    """Absolute local paths the card names (dataset, local candidates): they become
    readable by anyone who can read the repository."""

    def describe(self, dry_run: bool = False) -> str:
        where = (f"a pull request on {self.repo_type} {self.repo_id}" if self.create_pr
                 else f"the main branch of {self.repo_type} {self.repo_id}")
        head = (f"dry run: would upload to {where} (nothing uploaded):" if dry_run
                else f"uploading to {where}:")
        paths = [f.path_in_repo for f in self.files]
        if self.metadata is not None:
            paths.append(README_IN_REPO)
        width = max(map(len, paths))
        lines = [f"  {f.path_in_repo.ljust(width)}  {f.size:>8} bytes  (from {f.local})"
                 for f in self.files]
        if self.metadata is not None:
            lines.append(f"  {README_IN_REPO.ljust(width)}  metadata key '{METADATA_KEY}' "
                         "set, every other key and the text kept (read from main)")
            if dry_run:
                block = _yaml_text({METADATA_KEY: dict(self.metadata)})
                lines += ["  new metadata:", *("    " + line for line in block.splitlines())]
        if self.local_paths:
            shown = ", ".join(self.local_paths[:3]) + (", ..." if len(self.local_paths) > 3
                                                        else "")
            lines.append(f"  note: the card names {len(self.local_paths)} local path(s) "
                         f"({shown}); anyone who can read the repository will see them")
        return "\n".join([head, *lines])


def plan_upload(card: str | os.PathLike, repo_id: str, *, repo_type: str = "dataset",
                create_pr: bool = True, folder: str = CARD_DIR_IN_REPO,
                metadata: bool = False) -> UploadPlan:
    """The card at ``card`` and its JSON (same name, ``.json``) as files of ``repo_id``
    under ``folder``; with ``metadata``, also the card's summary (:func:`card_metadata`)
    for the repository's README.md."""
    md = Path(card)
    if not md.is_file():
        raise UsageError(f"no card at {md}; write one with `zoosel select ... --card {md}`.")
    if not _valid_repo_id(repo_id):
        raise UsageError(f"{repo_id!r} is not a Hub repository id (expected OWNER/NAME).")
    if repo_type not in ("dataset", "model", "space"):
        raise UsageError(f"unknown repository type {repo_type!r}: dataset, model or space.")
    files = [md] + [p for p in (md.with_suffix(".json"),) if p.is_file() and p != md]
    prefix = folder.strip("/") + "/" if folder.strip("/") else ""
    try:
        data = _read_card_data(md)
    except UsageError:
        if metadata:
            raise
        data = {}  # any markdown file may be pushed; the summary needs a ranking card
    summary = card_metadata(data, prefix + md.name) if metadata else None
    return UploadPlan(repo_id, repo_type, create_pr, tuple(
        UploadFile(p, prefix + p.name, p.stat().st_size) for p in files), summary,
        local_paths=_local_paths(data))


def _local_paths(data: Mapping[str, Any]) -> tuple[str, ...]:
    """Absolute paths of this machine named by a card's data: the dataset and local
    candidates (``local:/...``), revision suffixes dropped."""
    names = [str((data.get("dataset") or {}).get("id") or "")]
    for entry in [*(data.get("candidates") or []), *(data.get("failed") or [])]:
        ident = str(entry.get("id") or "")
        if ident.startswith("local:"):
            names.append(ident[len("local:"):].rsplit("@", 1)[0])
    found = [n for n in names if n and PurePath(n).is_absolute()
             or (len(n) > 2 and n[1] == ":" and n[2] in "\\/")]
    return tuple(dict.fromkeys(found))


def _read_card_data(md: Path) -> dict[str, Any]:
    """The card's JSON next to ``md``, else the card's own front matter (the same keys)."""
    import yaml

    data: Any = None
    try:
        if md.with_suffix(".json").is_file() and md.suffix.lower() != ".json":
            data = json.loads(md.with_suffix(".json").read_text(encoding="utf-8"))
        else:
            text = md.read_text(encoding="utf-8")
            match = _front_matter_match(text)
            data = yaml.safe_load(match.group(2)) if match else None
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read the ranking from the card {md} ({exc}); write it again "
                         f"with `zoosel select ... --card {md}`.") from None
    if not isinstance(data, dict) or "candidates" not in data:
        raise UsageError(f"{md} is not a zoosel ranking card (no candidates in its JSON or "
                         f"front matter); write one with `zoosel select ... --card {md}`.")
    return data


def _valid_repo_id(repo_id: str) -> bool:
    return re.fullmatch(r"[\w.\-]+/[\w.\-]+", repo_id) is not None and ".." not in repo_id


def hub_dataset_id(dataset: str) -> str | None:
    """``dataset`` when it names a Hub dataset (``OWNER/NAME``, not a local path), else None."""
    if Path(dataset).expanduser().exists() or not _valid_repo_id(dataset):
        return None
    return dataset


@dataclass(frozen=True)
class PushResult:
    """What :func:`push_card` did, and the URL of the pull request or commit.

    ``outcome`` is ``opened`` (a pull request), ``committed`` (to main), ``unchanged`` (every
    file was already identical on main: no commit) or ``already-open`` (a pull request with
    this very card is open, for instance from an attempt the Hub applied but answered with
    an error: no second one).
    """

    url: str
    outcome: str


def push_card(plan: UploadPlan, *, endpoint: str | None = None,
              say: Callable[[str], None] | None = None) -> PushResult:
    """Upload ``plan`` in one commit (a pull request unless ``plan.create_pr`` is false).

    Files identical to the main branch's are not uploaded (huggingface_hub drops them); when
    none is left, no commit or pull request is made and the result says so.

    With ``plan.metadata``, the repository's README.md is read from the main branch, its
    ``zoosel`` metadata key set (:func:`merged_readme`) and the result added to the same
    commit, whose parent is the commit the README was read from.

    The token comes from huggingface_hub (``HF_TOKEN``, ``hf auth login``). Answers 429 or
    5xx are retried :data:`RETRIES` times with exponential backoff; every failure, reading
    the README included, becomes a :class:`~zoosel.errors.HubError` saying what to do.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint)
    message = "Add zoosel model ranking card"
    description = ("Model ranking written by zoosel " + __version__
                   + ": " + ", ".join(f.path_in_repo for f in plan.files) + ".")
    readme: bytes | None = None
    parent: str | None = None
    if plan.metadata is not None:
        existing, parent = _with_retries(lambda: _read_readme(api, plan), plan, say)
        try:
            readme = merged_readme(existing, {METADATA_KEY: dict(plan.metadata)}).encode()
        except UsageError as exc:  # the repository's README, not the user's command
            raise HubError(redact(
                f"{plan.repo_type} {plan.repo_id}: {exc} Fix it in the repository, or push "
                "without --card-metadata. The card is kept locally: "
                + ", ".join(str(f.local) for f in plan.files) + ".")) from None
        description += (f" Sets the `{METADATA_KEY}` key of {README_IN_REPO}'s metadata to "
                        "a summary of the ranking; nothing else in it changes.")

    title = f"{message} ({_card_digest(plan)})"
    sent: list[Any] = []
    attempts: list[int] = []

    def commit() -> Any:
        if plan.create_pr:  # an earlier attempt may have opened it before failing
            url = _open_pull_request(api, plan, title)
            if url is not None:  # after a failed attempt of ours, it is ours
                return PushResult(url, "opened" if attempts else "already-open")
        attempts.append(1)
        # Operations are built again for each attempt: an upload marks them as used.
        operations = [CommitOperationAdd(f.path_in_repo, str(f.local)) for f in plan.files]
        if readme is not None:
            operations.append(CommitOperationAdd(README_IN_REPO, readme))
        sent[:] = operations
        try:
            return api.create_commit(
                plan.repo_id, operations, commit_message=title if plan.create_pr else message,
                commit_description=description, repo_type=plan.repo_type,
                create_pr=plan.create_pr, parent_commit=parent)
        except ValueError as exc:  # the Hub's check of a README's metadata (validate-yaml)
            if readme is None or "Invalid metadata in README.md" not in str(exc):
                raise
            said = " ".join(str(exc).split("README.md.", 1)[-1].split())
            raise HubError(redact(
                f"the Hub rejected the metadata of {README_IN_REPO} in {plan.repo_type} "
                f"{plan.repo_id}" + (f" ({said})" if said else "") + ". Fix the metadata "
                "already in the repository's README.md, or push without --card-metadata. "
                "The card is kept locally: " + ", ".join(str(f.local) for f in plan.files)
                + ".")) from None

    info = _with_retries(commit, plan, say)
    if isinstance(info, PushResult):
        return info
    if info.pr_url:
        return PushResult(str(info.pr_url), "opened")
    if plan.create_pr or _all_unchanged(sent):
        # On main, after a retry, the unchanged files are the first attempt's commit.
        committed = not plan.create_pr and len(attempts) > 1
        return PushResult(str(info.commit_url), "committed" if committed else "unchanged")
    return PushResult(str(info.commit_url), "committed")


def _card_digest(plan: UploadPlan) -> str:
    """A short digest of the files a push uploads, which names its pull request."""
    import hashlib

    digest = hashlib.sha256()
    for f in plan.files:
        digest.update(f.path_in_repo.encode() + b"\0" + Path(f.local).read_bytes() + b"\0")
    return "card " + digest.hexdigest()[:12]


def _open_pull_request(api: Any, plan: UploadPlan, title: str) -> str | None:
    """The URL of an open pull request of ``plan``'s repository titled ``title``, if any."""
    for discussion in api.get_repo_discussions(
            plan.repo_id, repo_type=plan.repo_type, discussion_type="pull_request",
            discussion_status="open"):
        if discussion.title == title:
            return str(discussion.url)
    return None


def _all_unchanged(operations: list[Any]) -> bool:
    """Whether the preupload step found every file already on the branch, byte for byte
    (huggingface_hub then makes no commit and returns the branch's head)."""
    return bool(operations) and all(
        getattr(op, "_remote_oid", None) is not None
        and op._remote_oid == getattr(op, "_local_oid", None) for op in operations)


def _with_retries(call: Callable[[], Any], plan: UploadPlan,
                  say: Callable[[str], None] | None) -> Any:
    """``call()``, retried on 429 and 5xx; Hub failures raised as :func:`hub_error`."""
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:
            error = hub_error(exc, plan)
            status = _status(exc)
            if error is None:
                raise
            if status is None or not (status == 429 or status >= 500) or attempt >= RETRIES:
                raise error from None
            wait = min(BACKOFF_SECONDS * 2 ** attempt, MAX_BACKOFF_SECONDS)
            retry_after = _retry_after(exc)
            if retry_after is not None:
                wait = min(max(wait, retry_after), MAX_BACKOFF_SECONDS)
            attempt += 1
            if say is not None:
                say(f"the Hub answered {status}; retrying in {wait:.0f}s "
                    f"({attempt}/{RETRIES})")
            time.sleep(wait)


def _read_readme(api: Any, plan: UploadPlan) -> tuple[str | None, str]:
    """The README.md on the main branch of ``plan``'s repository (None when it has none),
    and the commit it was read from."""
    from huggingface_hub.errors import RemoteEntryNotFoundError

    sha = api.repo_info(plan.repo_id, repo_type=plan.repo_type, revision="main").sha
    try:
        path = api.hf_hub_download(plan.repo_id, README_IN_REPO, repo_type=plan.repo_type,
                                   revision=sha)
    except RemoteEntryNotFoundError:
        return None, sha
    data = Path(path).read_bytes()  # bytes: keep the README's line endings as they are
    try:
        return data.decode("utf-8"), sha
    except UnicodeDecodeError:
        raise HubError(f"the {README_IN_REPO} of {plan.repo_type} {plan.repo_id} is not UTF-8 "
                       f"text, so zoosel will not edit it; push without --card-metadata. "
                       "The card is kept locally: "
                       + ", ".join(str(f.local) for f in plan.files) + ".") from None


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        value = headers.get("Retry-After")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _has_token() -> bool:
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except Exception:
        return False


def hub_error(exc: BaseException, plan: UploadPlan) -> HubError | None:
    """The :class:`~zoosel.errors.HubError` for an exception raised while uploading ``plan``
    (None when it is not a Hub or network failure)."""
    where = f"{plan.repo_type} {plan.repo_id}"
    kept = "The card is kept locally: " + ", ".join(str(f.local) for f in plan.files) + "."
    retry = f"`zoosel card push {plan.files[0].local} --repo {plan.repo_id}` uploads it later."
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = _status(exc)
    if "OfflineModeIsEnabled" in names:
        msg = (f"cannot upload to {where}: HF_HUB_OFFLINE is set. Unset it once online; "
               f"{retry}")
        return HubConnectionError(redact(f"{msg} {kept}"))
    if status is None:
        if isinstance(exc, TimeoutError) or any("Timeout" in n for n in names):
            msg = (f"the Hub did not answer in time while uploading to {where}. Check your "
                   f"connection or proxy and retry; {retry}")
            return HubTimeoutError(redact(f"{msg} {kept}"))
        if isinstance(exc, ConnectionError) or names & {
            "ConnectError", "NetworkError", "TransportError", "ProxyError", "ConnectionError",
        }:
            endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
            msg = (f"cannot reach the Hub at {endpoint} to upload to {where}: no network? "
                   f"Check your connection or proxy and retry; {retry}")
            return HubConnectionError(redact(f"{msg} {kept}"))
        return None
    server = getattr(exc, "server_message", None) or ""
    detail = f" (the Hub said: {server.strip().splitlines()[0]})" if server.strip() else ""
    if status == 401:
        if not _has_token():
            msg = (f"no Hugging Face token: uploading to {where} needs one with write access. "
                   "Set HF_TOKEN or run `hf auth login`, then retry;")
        else:
            msg = (f"the Hub rejected the token (401){detail}. It may be mistyped, expired or "
                   f"revoked: create a new one at https://huggingface.co/settings/tokens, set "
                   f"HF_TOKEN or run `hf auth login`, then retry;")
        return HubAuthError(redact(f"{msg} {retry} {kept}"))
    if status == 403:
        msg = (f"the token may not write to {where} (403){detail}. Use a token with write "
               "access to it (fine-grained tokens need 'write' on this repository), or pass "
               "--card-repo / --repo with a repository you can write to;")
        return HubPermissionError(redact(f"{msg} {retry} {kept}"))
    if status == 404:
        msg = (f"no {where} on the Hub, or this token cannot see it (404). Check the "
               "repository id and type (--card-repo / --repo), and that the token can read "
               "it;")
        return HubNotFoundError(redact(f"{msg} {retry} {kept}"))
    if status == 429:
        msg = (f"the Hub is rate-limiting uploads (429 after {RETRIES} retries). Wait a few "
               "minutes and retry;")
        return HubRateLimitError(redact(f"{msg} {retry} {kept}"))
    if status >= 500:
        msg = (f"the Hub failed to accept the upload to {where} ({status} after {RETRIES} "
               "retries). It may be down: see https://status.huggingface.co and retry later;")
        return HubServerError(redact(f"{msg} {retry} {kept}"))
    if status == 412:
        msg = (f"{where} changed while the card was being uploaded (412): its README.md is "
               "read before the commit and must not change meanwhile. Retry;")
        return HubError(redact(f"{msg} {retry} {kept}"))
    msg = f"the Hub refused the upload to {where} ({status}){detail};"
    return HubError(redact(f"{msg} {retry} {kept}"))
