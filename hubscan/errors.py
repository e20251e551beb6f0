"""Failures: hubscan could not do its job.

Owns the exit-code table and the HubscanError tree; each class carries its ExitCode. Bad or hostile
*input* files are never errors here: they are Findings (records.py). Must not import third-party
libraries: wrapping their errors happens at the boundary modules (hub.py, model.py).
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """The process exit codes; they are API (README, --help)."""

    OK = 0  # finished; nothing at or above fail_on; no backdoor, or one removed and verified
    FINDINGS = 1  # finished; the gate fails
    USAGE = 2  # command-line usage error (Typer's own)
    NO_VERDICT = 3  # bad policy, repo, revision, auth, unreadable input, or a budget ran out
    NOT_REMEDIATED = 4  # a patch was attempted but did not pass verification
    INTERNAL = 5  # a bug


class HubscanError(Exception):
    """Base class; `str(err)` is one actionable line."""

    exit_code: ClassVar[ExitCode] = ExitCode.INTERNAL


class NoVerdict(HubscanError):
    """hubscan could not reach a verdict: the input must change."""

    exit_code = ExitCode.NO_VERDICT


class PolicyError(NoVerdict):
    """A policy file is missing, unreadable or invalid; the message lists every problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__(f"invalid policy {source}: " + "; ".join(problems))


class RefError(NoVerdict):
    """A model reference (org/name[@rev] or directory) cannot be parsed or does not exist."""


class RepoNotFound(NoVerdict):
    """The repository does not exist, or is private and no token grants access."""


class RevisionNotFound(NoVerdict):
    """The branch, tag or commit does not exist in the repository."""


class AccessDenied(NoVerdict):
    """The repository is gated or the token lacks access."""


class NotCached(NoVerdict):
    """Offline mode, and the repository (or a needed file) is not in the local cache."""


class HubUnavailable(NoVerdict):
    """The Hub could not be reached, rate-limited us, or answered with a server error."""


class TooLarge(NoVerdict):
    """The files to download exceed the policy's size budget."""


class FetchError(NoVerdict):
    """A download or a read of the snapshot failed (I/O), so the scan would be incomplete."""


class ProbeError(NoVerdict):
    """Probe images or a label set are missing or invalid."""


class LockFileError(NoVerdict):
    """A models file (models.lock) cannot be read or has a line that is not org/name@sha."""


class BudgetExhausted(NoVerdict):
    """Trigger inversion ran out of its time budget before it could decide."""


class TriggerError(NoVerdict):
    """A trigger spec or trigger file is invalid."""


class RefusedToLoad(HubscanError):
    """The static scan blocks loading these weights (findings at or above fail_on)."""

    exit_code = ExitCode.FINDINGS


class WeightsMismatch(NoVerdict):
    """The weights do not fit the architecture in open_clip_config.json (keys or shapes)."""


class ModelError(NoVerdict):
    """The checkpoint cannot be loaded as an open_clip model (layout, config or weights)."""


class NotRemediated(HubscanError):
    """A patch was attempted but did not pass: no coefficient kept clean accuracy, or the
    patched model failed verification. Nothing is released."""

    exit_code = ExitCode.NOT_REMEDIATED

    def __init__(
        self,
        message: str,
        *,
        trials: tuple[tuple[float, float, float], ...] = (),
        run: object = None,
    ) -> None:
        super().__init__(message)
        self.trials = trials  # (coefficient, clean accuracy, attack success): the table to show
        self.run = run  # the RunReport so far (records sit beside errors, hence `object`)


class NotVerifiedRelease(HubscanError):
    """`hubscan publish` was given a release that is not the verified one: a file changed, is
    missing or was added to the list, or the report says verification did not pass. Nothing is
    uploaded; same code as a failed verification."""

    exit_code = ExitCode.NOT_REMEDIATED


class ReleaseTampered(NotVerifiedRelease):
    """A release file's sha256 no longer matches the one recorded when it was verified."""


class RunDirError(NoVerdict):
    """A run directory given to `hubscan publish` is missing, unreadable, or not a release."""


class PublishRefused(NoVerdict):
    """The Hub refused the commit (e.g. the model card's metadata failed its validation)."""


class UsageError(HubscanError):
    """Options that do not fit together, found after parsing (same code as Typer's own)."""

    exit_code = ExitCode.USAGE
