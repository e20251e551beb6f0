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
