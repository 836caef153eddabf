"""A benchmark ``results.json``: checking that a dict is one, and the scorer versions it
records.

``scorer_versions`` (top level) maps each score measured in the build to the version of
its scorer (:attr:`zoosel.types.Scorer.version`, options included, e.g.
``"2+solver=logistic"``). A score whose recorded version differs from the installed
scorer's is *stale*: its values are those of another computation. Results written before
the versions were recorded have no such key; their stale scores cannot be told apart.
Version ``"0"``, recorded afterwards for such results, means: computed before the scorer
had versions, by a computation that is not its version 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoosel.errors import UsageError

if TYPE_CHECKING:
    from zoosel.types import Scorer

SCORER_VERSIONS = "scorer_versions"


def check_results(data: Any, where: str) -> dict[str, Any]:
    """``data`` if it is a results dict: ``tasks[task][regime]`` mappings, each with an
    ``accuracy`` mapping, and ``scorer_versions``, when present, names mapped to strings.

    :raises UsageError: naming ``where`` (a file or a build) and what is wrong.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("tasks"), Mapping):
        raise UsageError(f"{where} is not a benchmark results file (no 'tasks').")
    for task, regimes in data["tasks"].items():
        if not isinstance(regimes, Mapping):
            raise UsageError(f"{where}: tasks[{task!r}] is not a mapping of regimes.")
        for regime, entry in regimes.items():
            if not isinstance(entry, Mapping) or not isinstance(entry.get("accuracy"), Mapping):
                raise UsageError(f"{where}: tasks[{task!r}][{regime!r}] has no 'accuracy'.")
    versions = data.get(SCORER_VERSIONS)
    if versions is not None and not (
            isinstance(versions, Mapping)
            and all(isinstance(v, str) for v in versions.values())):
        raise UsageError(f"{where}: '{SCORER_VERSIONS}' must map score names to version "
                         "strings.")
    return dict(data)


def load_results(path: Path) -> dict[str, Any]:
    """A written ``results.json``, checked with :func:`check_results` (:class:`UsageError`
    otherwise)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise UsageError(f"{path} does not exist or is not a file.") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from exc
    return check_results(data, str(path))


def merge_versions(per_pair: Iterable[Mapping[str, str] | None]) -> dict[str, str]:
    """One version per score over a build's scoring results: a score is left out when
    some result does not record it (written before versions were), and recorded as
    ``"mixed: 1, 2"`` (never an installed version, so stale) when they disagree."""
    pairs = list(per_pair)
    if not pairs or any(not p for p in pairs):
        return {}
    names = set().union(*pairs)
    out = {}
    for name in sorted(names):
        values = {p.get(name) for p in pairs}
        if None in values:
            continue
        out[name] = values.pop() if len(values) == 1 else f"mixed: {', '.join(sorted(values))}"
    return out


def installed_version(scorer: Scorer, recorded: str) -> str:
    """The installed ``scorer``'s version with the options a recorded version names
    (``"2+solver=logistic"``: ``solver=logistic``), its plain version when they no longer
    apply."""
    _, plus, tag = recorded.partition("+")
    if not plus:
        return scorer.version
    options = dict(kv.partition("=")[::2] for kv in tag.split(",") if kv)
    try:
        return scorer.with_options(options).version
    except UsageError:
        return scorer.version


def same_values(scorer: Scorer, recorded: str, installed: str) -> bool:
    """Whether values recorded at version ``recorded`` are those the ``installed`` version
    computes: the same version, or one the scorer declares it reproduces
    (:attr:`zoosel.types.Scorer.same_values_as`) with the same options."""
    if recorded == installed:
        return True
    old, _, old_options = recorded.partition("+")
    _, _, options = installed.partition("+")
    return old_options == options and old in scorer.same_values_as


@dataclass(frozen=True)
class VersionCheck:
    """The scorer versions recorded in one results dict against the installed scorers."""

    recorded: bool
    """Whether the results record scorer versions at all."""
    stale: dict[str, tuple[str, str]]
    """``{score: (recorded version, installed version)}`` of the scores that differ."""
    unrecorded: tuple[str, ...] = ()
    """Measured scores without a recorded version (in results that record some)."""
    not_installed: tuple[str, ...] = ()
    """Scores with a recorded version but no installed scorer to compare with."""

    def reasons(self) -> dict[str, str]:
        """``{score: "results have version 1, installed 2"}`` of the stale scores."""
        return {name: f"results have version {old}, installed {new}"
                for name, (old, new) in self.stale.items()}

    def summary(self, stale_label: str = "left out") -> str:
        """One line: the stale scores after ``stale_label`` with the reason, the scores
        that could not be checked, or that the results record no versions."""
        if not self.recorded:
            return "versions not recorded"
        parts = []
        if self.stale:
            parts.append(f"{stale_label}: " + "; ".join(f"{n} ({r})"
                                                       for n, r in self.reasons().items()))
        if self.unrecorded:
            parts.append(f"version not recorded for {', '.join(self.unrecorded)}")
        if self.not_installed:
            parts.append(f"not installed here: {', '.join(self.not_installed)}")
        return "; ".join(parts) or "every score at the installed scorer's version"


def measured_scores(results: Mapping[str, Any]) -> set[str]:
    """The scores of ``results`` measured in the build (not the rows an evaluation
    derived)."""
    derived = set(results.get("derived_scores") or ())
    return {s for regimes in results["tasks"].values() for e in regimes.values()
            if isinstance(e, Mapping) for s in (e.get("scores") or {})} - derived


def check_versions(results: Mapping[str, Any],
                   installed: Mapping[str, Scorer] | None = None) -> VersionCheck:
    """Compare the versions ``results`` record with ``installed`` (default: every
    registered scorer)."""
    recorded = results.get(SCORER_VERSIONS)
    if not isinstance(recorded, Mapping) or not recorded:
        return VersionCheck(recorded=False, stale={})
    if installed is None:
        from zoosel.api import list_scorers

        installed = list_scorers()
    measured = measured_scores(results)
    stale, unrecorded, missing = {}, [], []
    for name in sorted(measured):
        if name not in recorded:
            unrecorded.append(name)
        elif name not in installed:
            missing.append(name)
        else:
            now = installed_version(installed[name], str(recorded[name]))
            if not same_values(installed[name], str(recorded[name]), now):
                stale[name] = (str(recorded[name]), now)
    return VersionCheck(recorded=True, stale=stale, unrecorded=tuple(unrecorded),
                        not_installed=tuple(missing))
