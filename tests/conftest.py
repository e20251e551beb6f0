"""Test-wide setup: offline, CPU-only, HF cache in a temp dir, no colour.

huggingface_hub reads HF_HUB_OFFLINE / HF_HOME / HF_HUB_CACHE once at import, so they are set here,
before any test module imports it.
"""

from __future__ import annotations

import os
import tempfile

_HF_HOME = tempfile.mkdtemp(prefix="hubscan-test-hf-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_CACHE"] = os.path.join(_HF_HOME, "hub")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_TOKEN", None)
os.environ["NO_COLOR"] = "1"
os.environ["COLUMNS"] = "200"

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.support.fake_hub import FakeHub  # noqa: E402
from tests.support.hub_release import Released, patch_from_hub  # noqa: E402


@pytest.fixture(autouse=True)
def audit_cache_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Each test gets an empty audit results cache: a cached verdict from another test (or from
    the user's own runs) must never decide a test's outcome."""
    folder = tmp_path_factory.mktemp("audit-cache")
    monkeypatch.setenv("HUBSCAN_AUDIT_CACHE", str(folder))
    return folder


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    """A fake Hub HTTP server on 127.0.0.1 for the real huggingface_hub client."""
    with FakeHub() as server:
        yield server


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lift HF_HUB_OFFLINE for one test; huggingface_hub read it at import, as its own tests do."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="session")
def quick_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick zoo (base + 2 backdoored + 2 clean), trained once and cached by recipe outside
    the checkout (HUBSCAN_CACHE, else ~/.cache/hubscan); later sessions reuse it."""
    from hubscan.zoo import build_zoo

    out = tmp_path_factory.mktemp("zoo")
    build_zoo(out, quick=True)
    return out


@pytest.fixture(scope="session")
def hub_release(quick_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Released:
    """A quick-zoo backdoored model patched from a fake Hub once, for the patch and publish
    tests (tests/support/hub_release.py)."""
    return patch_from_hub(quick_zoo, tmp_path_factory)
