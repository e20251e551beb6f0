from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from hubscan import audit_cache
from hubscan.audit_cache import AuditKey
from hubscan.records import RunReport, TriggerArtifact, Verdict
from tests.unit.test_report import BACKDOOR, SHA, audited

KEY = AuditKey(
    repo_id="acme/tiny-clip",
    commit=SHA,
    policy_sha256="e" * 64,
    fail_on="high",
    tool_version="0.1.0",
    inputs_sha256="1" * 64,
    seed=0,
    device="cpu",
)


def with_trigger_files(run_dir: Path) -> RunReport:
    """An audited run whose trigger files exist in run_dir, with their real sha256."""
    run = audited(*BACKDOOR)
    assert run.detection is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    artifacts = []
    for artifact in run.detection.triggers:
        data = f"tensors of {artifact.family}".encode()
        (run_dir / artifact.tensors).write_bytes(data)
        (run_dir / artifact.png).write_bytes(b"png")
        digest = hashlib.sha256(data).hexdigest()
        artifacts.append(dataclasses.replace(artifact, sha256=digest))
    detection = dataclasses.replace(run.detection, triggers=tuple(artifacts))
    return dataclasses.replace(run, detection=detection)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(AuditKey)])
def test_every_part_of_the_key_changes_its_digest(field: str) -> None:
    value = getattr(KEY, field)
    other = value + 1 if isinstance(value, int) else value + "x"
    assert dataclasses.replace(KEY, **{field: other}).digest != KEY.digest


def test_a_stored_run_reads_back_equal(tmp_path: Path) -> None:
    run = audited(*BACKDOOR)
    assert audit_cache.store(KEY, run, None, root=tmp_path)
    assert audit_cache.lookup(KEY, with_triggers=False, root=tmp_path) == run


def test_a_run_without_trigger_files_is_a_miss_when_a_run_directory_is_wanted(
    tmp_path: Path,
) -> None:
    audit_cache.store(KEY, audited(*BACKDOOR), None, root=tmp_path)
    assert audit_cache.lookup(KEY, with_triggers=True, root=tmp_path) is None


def test_trigger_files_are_stored_and_checked_against_their_sha256(tmp_path: Path) -> None:
    run = with_trigger_files(tmp_path / "run")
    assert audit_cache.store(KEY, run, tmp_path / "run", root=tmp_path / "cache")
    assert audit_cache.lookup(KEY, with_triggers=True, root=tmp_path / "cache") == run
    assert run.detection is not None
    entry = audit_cache.entry_dir(KEY, tmp_path / "cache")
    (entry / run.detection.triggers[0].tensors).write_bytes(b"tampered")
    assert audit_cache.lookup(KEY, with_triggers=True, root=tmp_path / "cache") is None


@pytest.mark.parametrize(
    "damage",
    [b"", b"{not json", b'{"verdict": "pass"}', b"\xff\xfe"],
    ids=["empty", "torn", "wrong-shape", "not-utf8"],
)
def test_an_unreadable_entry_is_a_miss_not_an_error(tmp_path: Path, damage: bytes) -> None:
    audit_cache.store(KEY, audited(*BACKDOOR), None, root=tmp_path)
    (audit_cache.entry_dir(KEY, tmp_path) / "report.json").write_bytes(damage)
    assert audit_cache.lookup(KEY, with_triggers=False, root=tmp_path) is None


def test_an_entry_for_another_commit_is_a_miss(tmp_path: Path) -> None:
    audit_cache.store(KEY, audited(*BACKDOOR), None, root=tmp_path)
    other = dataclasses.replace(KEY, commit="f" * 40)
    target = audit_cache.entry_dir(other, tmp_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    audit_cache.entry_dir(KEY, tmp_path).rename(target)  # a report about KEY's commit, under other
    assert audit_cache.lookup(other, with_triggers=False, root=tmp_path) is None


def test_runs_without_verdict_or_detection_are_not_stored(tmp_path: Path) -> None:
    run = audited(*BACKDOOR)
    assert not audit_cache.store(
        KEY, dataclasses.replace(run, verdict=Verdict.NO_VERDICT), None, root=tmp_path
    )
    assert not audit_cache.store(KEY, dataclasses.replace(run, detection=None), None, root=tmp_path)
    assert not audit_cache.entry_dir(KEY, tmp_path).exists()


def test_trigger_names_that_leave_the_entry_are_a_miss(tmp_path: Path) -> None:
    run = with_trigger_files(tmp_path / "run")
    audit_cache.store(KEY, run, tmp_path / "run", root=tmp_path / "cache")
    assert run.detection is not None
    escaping = TriggerArtifact(
        family="patch", tensors="../x.safetensors", png="p.png", sha256="0" * 64
    )
    hostile = dataclasses.replace(
        run, detection=dataclasses.replace(run.detection, triggers=(escaping,))
    )
    audit_cache.store(KEY, hostile, None, root=tmp_path / "cache")
    assert audit_cache.lookup(KEY, with_triggers=True, root=tmp_path / "cache") is None


def test_inputs_digest_follows_label_file_and_probe_folder_content(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    folder = tmp_path / "probes"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "1.png").write_bytes(b"png-1")
    before = audit_cache.inputs_sha256(str(labels), str(folder))
    assert audit_cache.inputs_sha256(str(labels), str(folder)) == before
    (folder / ".DS_Store").write_bytes(b"ignored")  # hidden files are not probes
    assert audit_cache.inputs_sha256(str(labels), str(folder)) == before
    (folder / "cat" / "1.png").write_bytes(b"png-2")
    changed_probe = audit_cache.inputs_sha256(str(labels), str(folder))
    labels.write_text("cat\nbird\n")
    changed_labels = audit_cache.inputs_sha256(str(labels), str(folder))
    assert len({before, changed_probe, changed_labels}) == 3
    assert audit_cache.inputs_sha256(None, "default") != audit_cache.inputs_sha256(
        "fashion-mnist", "default"
    )
