"""One `hubscan patch` of a zoo model fetched from a fake Hub (known trigger, the fast policy),
shared by the patch and publish tests: a patch takes tens of seconds on CPU, and both only
need one release of a backdoored model that came from the Hub."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
from typer.testing import CliRunner

from hubscan.cli import app
from hubscan.publish import EVIDENCE_DIR, ROOT_FILES
from tests.support.fake_hub import FakeHub

REPO = "acme/coat-clip"
MODEL = "blend-noise-coat"  # in the quick zoo
TRIGGER = "blend:pattern=noise,ratio=0.15,seed=3"
TARGET = "coat"
# One halving of the coefficient step (default 3) and two dampings, not four: these tests check
# behaviour (with no halving and the full stamp, blend-noise-coat kept 10.4 %, over the 10 % bar);
# `hubscan bench unlearning` measures the default policy's quality.
FAST_POLICY = (
    'schema = 1\nextends = "default"\nname = "fast"\n'
    "[unlearning]\nrefine = 1\nfisher_dampings = [0, 10]\n"
)


@dataclass(frozen=True)
class Released:
    code: int
    stdout: str  # the patch's report, --format json
    stderr: str
    out: Path
    commit: str  # the audited commit on the Hub
    hub_files: dict[str, bytes]  # the repo as the Hub served it

    @property
    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / "report.json").read_text())
        return data

    def expected_upload(self) -> dict[str, str]:
        """Path in repo -> sha256, from the release's own report.json."""
        listed = {f["path"]: f["sha256"] for f in self.report["release"]["files"]}
        listed["report.json"] = hashlib.sha256((self.out / "report.json").read_bytes()).hexdigest()
        return {(p if p in ROOT_FILES else f"{EVIDENCE_DIR}/{p}"): d for p, d in listed.items()}


def serve(hub: FakeHub, files: dict[str, bytes]) -> str:
    return hub.add_repo(REPO, files, lfs=["open_clip_model.safetensors"]).commit


def fast_policy(folder: Path) -> Path:
    path = folder / "fast.toml"
    path.write_text(FAST_POLICY)
    return path


def patch_from_hub(zoo: Path, tmp: pytest.TempPathFactory) -> Released:
    """`hubscan patch acme/coat-clip --trigger … --target coat --format json`, the repo served
    by a fake Hub that is gone when this returns (publish tests start their own)."""
    files = {p.name: p.read_bytes() for p in (zoo / MODEL).iterdir() if p.is_file()}
    policy = fast_policy(tmp.mktemp("policy"))
    out = tmp.mktemp("hub-release") / "release"
    args = ["--labels", "fashion-mnist", "--trigger", TRIGGER, "--target", TARGET]
    args += ["-p", str(policy), "--format", "json"]
    with FakeHub() as hub, pytest.MonkeyPatch.context() as patch:
        commit = serve(hub, files)
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp.mktemp("hf")))
        patch.setenv("HF_ENDPOINT", hub.endpoint)
        result = CliRunner().invoke(app, ["patch", REPO, "--out", str(out), *args])
    return Released(result.exit_code, result.stdout, result.stderr, out, commit, files)
