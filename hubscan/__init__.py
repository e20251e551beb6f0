"""hubscan: vet CLIP checkpoints before they ship.

Owns the version and a small library API that returns records. Imports nothing heavy at module
load, so `hubscan scan` and `import hubscan` never pull in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pathlib import Path

    from hubscan.records import RunReport

__all__ = ["__version__", "audit", "scan_model"]


def scan_model(
    ref: str, *, policy: str | Path = "default", offline: bool | None = None
) -> RunReport:
    """Fetch `ref` (org/name[@rev] or a local directory) and scan its files statically.

    (Not named `scan`: the `hubscan.scan` subpackage would shadow it.)"""
    from hubscan import pipeline
    from hubscan.policy import load_policy

    return pipeline.scan(ref, policy=load_policy(policy), offline=offline)


def audit(
    ref: str,
    *,
    labels: str | None = None,
    probes: str = "default",
    policy: str | Path = "default",
    offline: bool | None = None,
    seed: int = 0,
) -> RunReport:
    """Scan `ref`, load it and search it for a backdoor (`hubscan audit`); the report's
    `detection` holds the verdict, the score of each trigger shape and the suspected target."""
    from hubscan import pipeline
    from hubscan.policy import load_policy

    return pipeline.audit(
        ref, policy=load_policy(policy), labels=labels, probes=probes, offline=offline, seed=seed
    )
