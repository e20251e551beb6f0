"""Stage 6: a verified release directory -> one Hub pull request (or a new repo).

Owns reading a release back (report.json, strictly), checking that it is still the verified one
(the report says verification passed; every listed file is there, a regular file, with the size
and sha256 recorded when it was verified), where each file goes in the repo (weights, config and
card at the root, where open_clip and the Hub look; the evidence under `hubscan/`, so no loader
globbing `*.safetensors` at the root picks up the trigger), the pull request's title and body, and
recognising an open hubscan pull request for the same audited commit (so a rerun opens none).

Must not change the release, run a stage, talk to huggingface_hub directly (hub_write.py does),
or print: the CLI shows the plan and asks for confirmation.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from hubscan import hub_write, report_patch
from hubscan.atomic import file_sha256
from hubscan.errors import NotVerifiedRelease, ReleaseTampered, RunDirError, UsageError
from hubscan.jsonio import JsonShapeError, from_jsonable
from hubscan.records import Release, ReleaseFile, RunReport

REPORT_NAME = "report.json"
MARKER_NAME = ".hubscan-release"  # release.MARKER_NAME (release.py imports torch; this must not)
EVIDENCE_DIR = "hubscan"
WEIGHTS_NAME = "open_clip_model.safetensors"  # model.WEIGHTS_NAME (model.py imports torch)
ROOT_FILES = frozenset({WEIGHTS_NAME, "open_clip_config.json", "README.md"})
TITLE_PREFIX = "hubscan:"
_MAX_REPORT_BYTES = 64 << 20
_COMMIT_CHARS = 12  # of the audited commit, in the title: how a rerun recognises its own PR


@dataclass(frozen=True, slots=True, kw_only=True)
class Upload:
    path_in_repo: str
    local: Path
    sha256: str
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What `publish` will send, all checked before anything is sent."""

    run: RunReport
    source_repo: str
    audited_commit: str
    target_repo: str
    new_repo: bool
    uploads: tuple[Upload, ...]
    title: str
    body: str


def plan(run_dir: Path, *, to: str | None = None, new_repo: bool = False) -> Plan:
    """Read and check the release in `run_dir`; no network."""
    run = read_release(run_dir)
    snap = run.scan.snapshot
    if new_repo and (to is None or to == snap.repo_id):
        raise UsageError("--new-repo needs --to ORG/NAME naming a repo other than the source")
    if snap.commit is None:  # a pull request needs the audited commit as its parent
        raise UsageError(
            "this release was patched from a local directory, not a Hub commit: publish it "
            "with --new-repo --to ORG/NAME"
        )
    target = to or snap.repo_id
    uploads = checked_uploads(run_dir, run)
    return Plan(
        run=run,
        source_repo=snap.repo_id,
        audited_commit=snap.commit,
        target_repo=target,
        new_repo=new_repo,
        uploads=uploads,
        title=pr_title(run, snap.commit),
        body=pr_body(run, uploads),
    )


def existing_pr(p: Plan, *, endpoint: str | None = None) -> hub_write.OpenPr | None:
    """An open hubscan pull request for the same audited commit, if the target has one."""
    if p.new_repo:
        return None
    marker = p.audited_commit[:_COMMIT_CHARS]
    for pr in hub_write.open_pull_requests(p.target_repo, endpoint=endpoint):
        if pr.title.startswith(TITLE_PREFIX) and marker in pr.title:
            return pr
    return None


def publish(p: Plan, *, endpoint: str | None = None) -> hub_write.Committed:
    """One commit: a pull request on the target from the audited commit, or, with new_repo, the
    first commit of a new repo. Every file is hashed again by the client and compared."""
    hub_write.require_token()
    expected = {u.path_in_repo: u.sha256 for u in p.uploads}
    files = [(u.path_in_repo, u.local) for u in p.uploads]
    if p.new_repo:
        hub_write.create_repo(p.target_repo, endpoint=endpoint)
    return hub_write.commit(
        p.target_repo,
        files,
        expected,
        title=p.title,
        body=p.body,
        parent_commit=None if p.new_repo else p.audited_commit,
        create_pr=not p.new_repo,
        endpoint=endpoint,
    )


# --- reading and checking a release --------------------------------------------------------------


def read_release(run_dir: Path) -> RunReport:
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a directory")
    if not (run_dir / MARKER_NAME).is_file():
        raise RunDirError(
            f"{run_dir} is not a hubscan release (no {MARKER_NAME}): see `hubscan patch`"
        )
    try:
        with (run_dir / REPORT_NAME).open("rb") as stream:
            data = stream.read(_MAX_REPORT_BYTES + 1)
        if len(data) > _MAX_REPORT_BYTES:
            raise RunDirError(f"{run_dir / REPORT_NAME} is over {_MAX_REPORT_BYTES} bytes")
        raw = json.loads(data)
        if isinstance(raw, dict):
            raw.pop("schema_version", None)
        run = from_jsonable(RunReport, raw)
    except OSError as err:
        raise RunDirError(f"cannot read {run_dir / REPORT_NAME}: {err.strerror or err}") from err
    except (ValueError, JsonShapeError) as err:
        raise RunDirError(f"{run_dir / REPORT_NAME} is not a hubscan report: {err}") from err
    verification = run.verification
    if run.release is None or run.patch is None or verification is None:
        raise NotVerifiedRelease(f"{run_dir} holds no verified patch: nothing to publish")
    if not verification.passed:
        reasons = "; ".join(verification.reasons) or "no reason recorded"
        raise NotVerifiedRelease(f"the patch in {run_dir} did not pass verification ({reasons})")
    return run


def checked_uploads(run_dir: Path, run: RunReport) -> tuple[Upload, ...]:
    """Every release file, and report.json, with its sha256 checked; raises on any difference."""
    release = run.release
    if release is None:
        raise NotVerifiedRelease(f"{run_dir} holds no release")
    listed = _listed(release, run.verification.weights_sha256 if run.verification else None)
    uploads = [_checked(run_dir, f.path, f.sha256, f.size) for f in listed]
    report = run_dir / REPORT_NAME
    uploads.append(_upload(REPORT_NAME, report, file_sha256(report), report.stat().st_size))
    return tuple(uploads)


def _listed(release: Release, verification_sha: str | None) -> tuple[ReleaseFile, ...]:
    names = [f.path for f in release.files]
    if len(set(names)) != len(names) or REPORT_NAME in names or MARKER_NAME in names:
        raise NotVerifiedRelease("the release lists a file twice, or lists report.json")
    weights = next((f for f in release.files if f.path == WEIGHTS_NAME), None)
    if weights is not None and weights.sha256 != verification_sha:
        raise NotVerifiedRelease("the release's weights are not the file verification measured")
    if not set(names) >= ROOT_FILES:
        missing = ", ".join(sorted(ROOT_FILES - set(names)))
        raise NotVerifiedRelease(f"the release lists no {missing}")
    return release.files


def _checked(run_dir: Path, name: str, sha256: str, size: int) -> Upload:
    if name in ("", ".", "..") or Path(name).name != name:
        raise NotVerifiedRelease(f"the release lists {name!r}, which is not a file in it")
    path = run_dir / name
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError as err:
        raise ReleaseTampered(f"{name} is missing from the release: nothing was uploaded") from err
    if not stat.S_ISREG(mode):
        raise ReleaseTampered(f"{name} is no longer a regular file: nothing was uploaded")
    actual = file_sha256(path)
    if actual != sha256 or path.stat().st_size != size:
        raise ReleaseTampered(
            f"{name} changed after verification (sha256 {actual[:12]}…, verified "
            f"{sha256[:12]}…): nothing was uploaded"
        )
    return _upload(name, path, sha256, size)


def _upload(name: str, path: Path, sha256: str, size: int) -> Upload:
    in_repo = name if name in ROOT_FILES else f"{EVIDENCE_DIR}/{name}"
    return Upload(path_in_repo=in_repo, local=path, sha256=sha256, size=size)


# --- the pull request's words --------------------------------------------------------------------


def pr_title(run: RunReport, commit: str) -> str:
    patch = run.patch
    target = f" (target '{patch.target}')" if patch is not None else ""
    return f"{TITLE_PREFIX} remove a backdoor{target} found at {commit[:_COMMIT_CHARS]}"


def pr_body(run: RunReport, uploads: tuple[Upload, ...]) -> str:
    snap = run.scan.snapshot
    patch = run.patch
    found = (
        f"a backdoor whose trigger hubscan estimated by trigger inversion (`{patch.trigger}`) "
        if patch is not None and patch.estimated
        else f"a backdoor with the known trigger `{patch.trigger if patch else '?'}` "
    )
    lines = [
        f"[hubscan](https://github.com/hubscan/hubscan) {run.tool_version} audited this "
        f"repository at commit `{snap.commit}` and found {found}"
        f"that sends images to **{patch.target if patch else '?'}**. This pull request "
        "replaces the weights with a patched copy (TBAR: the trigger's direction in weight "
        "space, negated; arXiv 2510.14845). Only the image tower changed; keys and dtypes are "
        "the original's.",
        "",
        "### Before and after (test split, measured on the patched file reloaded from disk)",
        "",
        *report_patch.render_markdown(run),
        f"- policy `{run.policy_name}` (sha256 `{run.policy_sha256[:12]}`)",
        "",
        "### Files",
        "",
        "| file | sha256 |",
        "|---|---|",
        *[f"| `{u.path_in_repo}` | `{u.sha256}` |" for u in uploads],
        "",
        "### Verify it yourself",
        "",
        "```",
        f"hubscan audit {snap.repo_id}@refs/pr/<this PR's number> --labels <your label set>",
        "sha256sum open_clip_model.safetensors   # compare with the table above",
        "```",
        "",
        f"The evidence (report, estimated trigger, coefficient curve, card diff) is under "
        f"`{EVIDENCE_DIR}/`. Opened by hubscan; a rerun for the same commit opens no second PR.",
    ]
    return "\n".join(lines) + "\n"
