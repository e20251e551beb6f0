"""verify.py: a patch is judged from the file on disk, on the test split, and by a re-audit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hubscan.model import CONFIG_NAME, WEIGHTS_NAME, ClipHandle, load_clip
from hubscan.policy import load_policy
from hubscan.probes import load_labels, load_probes
from hubscan.triggers import parse_trigger
from hubscan.verify import Check, VerifySplit, verify

TRIGGER, TARGET = "patch:size=3,pos=br,pattern=white", "bag"


@pytest.fixture(scope="module")
def clip(quick_zoo: Path) -> ClipHandle:
    return load_clip(quick_zoo / "patch-white-br-bag")


def split() -> VerifySplit:
    labels = load_labels("fashion-mnist")
    test = load_probes("default", labels=labels, limit=1000).split(seed=0).test
    assert test.labels is not None
    return VerifySplit(
        images=test.images,
        labels=test.labels,
        labelled=True,
        classes=labels.classes,
        templates=labels.templates,
        labels_given=True,
    )


def check() -> Check:
    classes = load_labels("fashion-mnist").classes
    return Check(
        trigger=TRIGGER,
        stamp=parse_trigger(TRIGGER).apply,
        target=classes.index(TARGET),
        target_name=TARGET,
        source="known",
    )


def test_an_unpatched_file_fails_on_attack_success_and_the_re_audit(
    clip: ClipHandle, quick_zoo: Path, tmp_path: Path
) -> None:
    for name in (CONFIG_NAME, WEIGHTS_NAME):  # "patched" = the backdoored bytes, unchanged
        shutil.copyfile(quick_zoo / "patch-white-br-bag" / name, tmp_path / name)
    result = verify(clip, tmp_path, checks=[check()], test=split(), policy=load_policy("default"))
    assert not result.passed
    (comparison,) = result.comparisons
    assert comparison.before == comparison.after and comparison.after.attack_success > 0.8
    assert any("known trigger still works" in r for r in result.reasons)
    assert any("re-audit" in r for r in result.reasons)
    assert result.redetection is not None and result.redetection.suspected_target == TARGET
    # The re-audit scores on every test image it did not optimize on, not the audit's 64.
    assert result.redetection.holdout_images == 300 - result.redetection.probe_images
    assert result.test_images == 300 and result.accuracy_kind == "clean accuracy"


def test_a_clean_file_passes_and_keeps_its_accuracy(quick_zoo: Path, tmp_path: Path) -> None:
    # The clean zoo twin stands in for a perfect patch: no backdoor, the same accuracy.
    audited = load_clip(quick_zoo / "patch-white-br-bag")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copyfile(quick_zoo / "clean-01" / name, tmp_path / name)
    result = verify(
        audited, tmp_path, checks=[check()], test=split(), policy=load_policy("default")
    )
    assert result.passed, result.reasons
    (comparison,) = result.comparisons
    assert comparison.after.attack_success < 0.05 < 0.8 < comparison.before.attack_success
    assert result.weights_sha256 != ""
