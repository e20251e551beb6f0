"""The Hugging Face Hub boundary: the only module that imports huggingface_hub.

Owns resolving a revision (branch, tag or commit) to a commit sha, once, together with the file
listing (sizes, LFS sha256) and the Hub's own security scan; downloading a chosen subset of files
pinned to that sha into the HF cache; finding a snapshot in the local HF cache when offline;
updating a model card's metadata block through huggingface_hub's ModelCard (the card's body is the
caller's); and turning every huggingface_hub error into one HubscanError with a one-line message,
`raise ... from`.

Must not import torch, pickle or safetensors, nor read file contents (fetch.py hashes them, scan/
judges them). httpx2 is imported only for its transport errors: it is huggingface_hub 2.x's client.
Tokens come only from huggingface_hub's own auth (HF_TOKEN, `hf auth login`): never a parameter,
never logged. The endpoint is a parameter so tests can point it at a fake Hub on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx2
import yaml
from huggingface_hub import (
    HfApi,
    ModelCard,
    ModelCardData,
    constants,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.hf_api import RepoSibling
from huggingface_hub.repocard import REGEX_YAML_BLOCK

from hubscan.errors import (
    AccessDenied,
    FetchError,
    HubscanError,
    HubUnavailable,
    NotCached,
    RefError,
    RepoNotFound,
    RevisionNotFound,
)
from hubscan.records import HubFileScan

COMMIT_RE = re.compile(r"[0-9a-f]{40}")
# What the Hub's security status may call a file; anything else it says is kept as "suspicious".
_SCAN_STATUSES = frozenset(
    {"safe", "unsafe", "suspicious", "caution", "queued", "unscanned", "error"}
)
_MAX_DETAIL = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteFile:
    path: str  # POSIX path in the repo, as the Hub lists it (not yet checked for safety)
    size: int
    lfs_sha256: str | None = None  # the Hub's sha256 of an LFS file's content


@dataclass(frozen=True, slots=True, kw_only=True)
class HubRepo:
    """A repo resolved once: everything later is pinned to `commit`."""

    repo_id: str
    revision: str | None  # what was asked for; None = the default branch
    commit: str
    files: tuple[RemoteFile, ...]  # sorted by path
    scans: tuple[HubFileScan, ...]  # only the files the Hub flagged
    scans_done: bool | None  # None = the Hub did not say


@dataclass(frozen=True, slots=True, kw_only=True)
class CachedSnapshot:
    repo_id: str
    revision: str | None
    commit: str
    root: Path  # <cache>/models--ORG--NAME/snapshots/<commit>


def offline_mode() -> bool:
    """huggingface_hub's own offline switch (HF_HUB_OFFLINE, read once at its import)."""
    return constants.is_offline_mode()


def endpoint_url(endpoint: str | None = None) -> str:
    """The Hub to talk to: the argument, else HF_ENDPOINT as set now, else huggingface_hub's.

    huggingface_hub reads HF_ENDPOINT once at import and bakes it into its download URL template;
    passing the endpoint explicitly on every call keeps API calls and downloads on the same Hub.
    """
    chosen = endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    return chosen.rstrip("/")


def default_cache_dir() -> Path:
    return Path(constants.HF_HUB_CACHE)


def snapshot_dir(repo_id: str, commit: str, *, cache_dir: Path | None = None) -> Path:
    base = cache_dir if cache_dir is not None else default_cache_dir()
    return base / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots" / commit


def resolve(repo_id: str, revision: str | None = None, *, endpoint: str | None = None) -> HubRepo:
    """One API call: commit sha, file listing with sizes and LFS sha256, and security status."""
    with hub_errors(repo_id, revision):
        info = HfApi(endpoint=endpoint_url(endpoint)).model_info(
            repo_id, revision=revision, files_metadata=True, securityStatus=True
        )
    commit = _checked_commit(info.sha, repo_id, revision)
    if info.siblings is None:
        raise HubUnavailable(f"the Hub listed no files for {_where(repo_id, revision)}")
    files = tuple(sorted((_remote_file(s, repo_id) for s in info.siblings), key=lambda f: f.path))
    scans, scans_done = _security(info.security_repo_status)
    return HubRepo(
        repo_id=repo_id,
        revision=revision,
        commit=commit,
        files=files,
        scans=scans,
        scans_done=scans_done,
    )


def download(
    repo: HubRepo,
    paths: Sequence[str],
    *,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """Download `paths` at `repo.commit` into the HF cache; returns the snapshot directory.

    One hf_hub_download per exact path, not snapshot_download(allow_patterns=...): repo file names
    are chosen by the repo's author and could be glob patterns, and the listing is already known.
    Files already cached at this commit cost no request.
    """
    for path in paths:
        with hub_errors(repo.repo_id, repo.commit):
            hf_hub_download(
                repo.repo_id,
                path,
                revision=repo.commit,
                endpoint=endpoint_url(endpoint),
                cache_dir=cache_dir,
            )
    return snapshot_dir(repo.repo_id, repo.commit, cache_dir=cache_dir)


def cached(
    repo_id: str, revision: str | None = None, *, cache_dir: Path | None = None
) -> CachedSnapshot:
    """Find `repo_id@revision` in the local HF cache without any network request."""
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    where = _where(repo_id, revision)
    with hub_errors(repo_id, revision):
        try:
            folder = snapshot_download(
                repo_id, revision=revision, cache_dir=cache, local_files_only=True
            )
        except IncompleteSnapshotError as err:
            # The cached tree listing says files are missing: typical after a filtered download.
            # What is on disk is still what would be loaded, so it is what gets scanned.
            folder = err.snapshot_path
        except LocalEntryNotFoundError as err:
            raise NotCached(
                f"{where} is not in the local HF cache ({cache}): fetch it once online first"
            ) from err
    root = Path(folder)
    if not COMMIT_RE.fullmatch(root.name):
        raise NotCached(f"the HF cache entry for {where} is not a commit snapshot: {root}")
    return CachedSnapshot(repo_id=repo_id, revision=revision, commit=root.name, root=root)


def updated_card(
    original: str | None,
    *,
    base_model: str,
    tags: Sequence[str],
    edit_body: Callable[[str, str | None], str],
) -> str:
    """The model card `original` (None: no card) with base_model set, `tags` added (unique, the
    existing ones kept first) and its Markdown body replaced by `edit_body(body, problem)`.

    The card is untrusted input: if its YAML metadata cannot be read, the patch must not fail on
    it. `problem` is then one line saying what was lost, for the caller to show in the body: an
    invalid model-index is dropped (the rest of the metadata kept), and a block that is not YAML
    or not a mapping is replaced by a new one (the body is kept as it was).
    """
    card, problem = _parse_card(original or "")
    data = cast(ModelCardData, card.data)  # ModelCard.card_data_class; typed as its base class
    data.base_model = base_model
    existing = data.tags
    kept = [existing] if isinstance(existing, str) else list(existing or [])
    data.tags = kept + [t for t in dict.fromkeys(tags) if t not in kept]
    card.text = edit_body(card.text, problem)
    return str(card)


def card_metadata_problem(original: str | None) -> str | None:
    """What updated_card would report about `original`'s metadata; None when it reads cleanly."""
    return _parse_card(original or "")[1]


# yaml.safe_load builds only plain data; ModelCardData(**block) raises TypeError on non-string keys.
_CARD_ERRORS = (yaml.YAMLError, ValueError, TypeError)
_EMPTY_CARD = "---\n\n---\n"  # an empty block: ModelCard("") would log that none was found


def _parse_card(content: str) -> tuple[ModelCard, str | None]:
    if REGEX_YAML_BLOCK.search(content) is None:
        card = ModelCard(_EMPTY_CARD)
        card.text = content
        return card, None
    try:
        return ModelCard(content), None
    except _CARD_ERRORS:
        pass  # a second, lenient read says how much was lost
    try:
        # Lenient: only an unparsable model-index (eval results) is dropped; the rest is kept.
        card = ModelCard(content, ignore_metadata_errors=True)
    except _CARD_ERRORS as err:
        card = ModelCard(_EMPTY_CARD)
        match = REGEX_YAML_BLOCK.search(content)
        card.text = content[match.end() :] if match else content
        lost = _one_line(str(err))
        return card, f"its metadata block could not be read and was replaced ({lost})"
    return card, "its model-index could not be parsed and was dropped"


# --- listing and security status ----------------------------------------------------------------


def _checked_commit(sha: str | None, repo_id: str, revision: str | None) -> str:
    where = _where(repo_id, revision)
    if sha is None or not COMMIT_RE.fullmatch(sha):
        raise HubUnavailable(f"the Hub answered without a valid commit sha for {where}")
    # Asking for a commit must give that commit back, or nothing downstream is pinned.
    if revision is not None and COMMIT_RE.fullmatch(revision) and sha != revision:
        raise HubUnavailable(f"the Hub answered commit {sha} for {where}")
    return sha


def _remote_file(sibling: RepoSibling, repo_id: str) -> RemoteFile:
    lfs = sibling.lfs
    size = sibling.size if sibling.size is not None else (lfs.size if lfs is not None else None)
    if size is None:
        # files_metadata=True always carries sizes; without one the download budget is unknowable.
        raise HubUnavailable(f"the Hub gave no size for {sibling.rfilename!r} in {repo_id}")
    return RemoteFile(
        path=sibling.rfilename, size=size, lfs_sha256=lfs.sha256 if lfs is not None else None
    )


def _security(status: Any) -> tuple[tuple[HubFileScan, ...], bool | None]:
    """securityRepoStatus = {"scansDone": bool, "filesWithIssues": [{"path", "level", ...}]}."""
    if not isinstance(status, Mapping):
        return (), None
    done = status.get("scansDone")
    issues = status.get("filesWithIssues")
    items = issues if isinstance(issues, list) else []
    scans = tuple(
        _file_scan(item)
        for item in items
        if isinstance(item, Mapping) and isinstance(item.get("path"), str)
    )
    return scans, done if isinstance(done, bool) else None


def _file_scan(item: Mapping[str, Any]) -> HubFileScan:
    level = item.get("level")
    raw = level.lower() if isinstance(level, str) else "unspecified"
    # Listed under filesWithIssues is an issue, whatever the level says: fail closed.
    status = raw if raw in _SCAN_STATUSES else "suspicious"
    scanners = [
        f"{key}: {value['status']}"
        for key, value in sorted(item.items())
        if isinstance(value, Mapping) and isinstance(value.get("status"), str)
    ]
    detail = "; ".join([f"the Hub's scan flagged this file as {raw}", *scanners])
    return HubFileScan(path=item["path"], status=status, detail=_one_line(detail))


# --- errors -------------------------------------------------------------------------------------


@contextmanager
def hub_errors(repo_id: str, revision: str | None) -> Iterator[None]:
    """Translate huggingface_hub's errors, once, into HubscanErrors with one actionable line."""
    where = _where(repo_id, revision)
    try:
        yield
    except HfHubHTTPError as err:
        raise _from_http(err, repo_id, revision) from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise _from_unreachable(err, repo_id, revision) from err
    except httpx2.TransportError as err:
        raise HubUnavailable(f"cannot reach the Hub for {where}: {_one_line(str(err))}") from err
    except HFValidationError as err:
        raise RefError(f"not a valid Hub repo id or revision: {where}") from err


def _from_http(err: HfHubHTTPError, repo_id: str, revision: str | None) -> HubscanError:
    where = _where(repo_id, revision)
    # GatedRepoError subclasses RepositoryNotFoundError, so it must be tested first.
    if isinstance(err, GatedRepoError):
        return AccessDenied(
            f"{repo_id} is gated and your token has not been granted access: request access on "
            "its Hub page, then log in (HF_TOKEN or `hf auth login`)"
        )
    if isinstance(err, RepositoryNotFoundError):
        return RepoNotFound(
            f"repository {repo_id} not found on the Hub (or it is private and no token grants "
            "access)"
        )
    if isinstance(err, RevisionNotFoundError):
        asked = repr(revision) if revision else "(the default branch)"
        return RevisionNotFound(f"revision {asked} not found in {repo_id}")
    if isinstance(err, RemoteEntryNotFoundError):
        return FetchError(f"a file the Hub lists for {where} is missing: {err.response.url.path}")
    return _from_status(err.response.status_code, err.response.headers, where)


def _from_status(status: int, headers: Mapping[str, str], where: str) -> HubscanError:
    if status in (401, 403):
        return AccessDenied(
            f"the Hub refused access to {where} (HTTP {status}): check that your token may read "
            "it (HF_TOKEN or `hf auth login`)"
        )
    if status == 429:
        retry = headers.get("Retry-After", "")
        after = f", retry after {retry} s" if retry.isdigit() else ""
        return HubUnavailable(
            f"rate limited by the Hub (HTTP 429) while fetching {where}{after}: wait, or log in "
            "for a higher limit"
        )
    if status >= 500:
        return HubUnavailable(f"the Hub answered HTTP {status} for {where}: try again later")
    return HubUnavailable(f"unexpected Hub answer HTTP {status} for {where}")


def _from_unreachable(err: Exception, repo_id: str, revision: str | None) -> HubscanError:
    """hf_hub_download hides why it fell back to the cache in __cause__; recover the real reason."""
    where = _where(repo_id, revision)
    cause = _root_cause(err)
    if isinstance(cause, HfHubHTTPError):
        return _from_http(cause, repo_id, revision)
    if isinstance(cause, httpx2.TransportError):
        return HubUnavailable(f"cannot reach the Hub for {where}: {_one_line(str(cause))}")
    if isinstance(cause, FileMetadataError):
        return HubUnavailable(f"the endpoint does not answer like the Hub for {where}")
    if isinstance(cause, OfflineModeIsEnabled):
        return NotCached(
            f"offline mode is on (HF_HUB_OFFLINE), so {where} cannot be fetched from the Hub: "
            "unset it, or scan what the local HF cache holds"
        )
    return NotCached(f"{where} is not in the local HF cache and the Hub was not asked")


def _root_cause(err: BaseException) -> BaseException:
    seen: set[int] = set()
    current = err
    while id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (HfHubHTTPError, httpx2.TransportError, FileMetadataError)):
            return current
        following = current.__cause__ or current.__context__
        if following is None:
            return current
        current = following
    return current


def _where(repo_id: str, revision: str | None) -> str:
    return repo_id if revision is None else f"{repo_id}@{revision}"


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_DETAIL else line[: _MAX_DETAIL - 1] + "…"
