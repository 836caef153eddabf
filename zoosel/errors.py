"""One exception hierarchy for everything zoosel raises on purpose.

Each class also inherits the matching built-in where one fits, so callers that
catch ``ValueError`` or ``FileNotFoundError`` keep working. The CLI turns any
``ZooselError`` into its message and a non-zero exit code, never a traceback.
"""

from __future__ import annotations


class ZooselError(Exception):
    """Base class of every error zoosel raises on purpose."""

    exit_code: int = 2


class UsageError(ZooselError, ValueError):
    """The command line or the library call is inconsistent."""


class UnknownNameError(UsageError, KeyError):
    """A source, scorer or format name that no plugin registered."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        import difflib

        self.kind, self.name, self.known = kind, name, sorted(known)
        close = difflib.get_close_matches(name, self.known, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        msg = f"Unknown {kind} {name!r}.{hint} Known: {', '.join(self.known) or '(none)'}."
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class DatasetError(ZooselError, ValueError):
    """The target dataset cannot be used as given."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The target dataset does not exist locally, in the cache or on the Hub."""


class CandidateError(ZooselError, RuntimeError):
    """One candidate model cannot be loaded or run; the run goes on without it."""


class BenchJobError(ZooselError, RuntimeError):
    """Some benchmark jobs failed; the others' results are stored."""


class PluginError(ZooselError, RuntimeError):
    """A plugin misbehaved (bad registration, duplicate name)."""


class ScoringError(ZooselError, ArithmeticError):
    """A scorer cannot produce a finite value for these inputs."""


class NoResultsError(ZooselError, RuntimeError):
    """No candidate could be scored; ``ranking`` still holds the failures and skips."""

    exit_code = 1

    def __init__(self, message: str, ranking: object | None = None) -> None:
        super().__init__(message)
        self.ranking = ranking


class HubError(ZooselError, RuntimeError):
    """Talking to the Hugging Face Hub failed (uploading a ranking card, for instance).

    Files already written locally are kept; the message says what to do next.
    """

    exit_code = 6


class HubAuthError(HubError, PermissionError):
    """No token, or the Hub rejected it (HTTP 401)."""


class HubPermissionError(HubError, PermissionError):
    """The token is valid but may not write to the repository (HTTP 403)."""


class HubNotFoundError(HubError, LookupError):
    """The repository does not exist, or is invisible to this token (HTTP 404)."""


class HubRateLimitError(HubError):
    """The Hub kept answering 429 Too Many Requests after the retries."""


class HubServerError(HubError):
    """The Hub kept answering with a server error (5xx) after the retries."""


class HubTimeoutError(HubError, TimeoutError):
    """The Hub did not answer in time."""


class HubConnectionError(HubError, ConnectionError):
    """The Hub cannot be reached (no network, DNS, proxy, offline mode)."""
