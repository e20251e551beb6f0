"""bench_unlearning: the means a row set gives, and the page and figures drawn from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from hubscan.bench_unlearning import _summary
from hubscan.bench_unlearning_report import figures, markdown


def result(
    name: str, family: str, tbar: dict[str, Any], estimated: dict[str, Any]
) -> dict[str, Any]:
    curve = [[0.0, 0.9, 0.95], [0.5, 0.89, 0.3], [1.0, 0.88, 0.01]]
    return {
        "name": name,
        "family": family,
        "trigger": "patch:size=3",
        "target": "bag",
        "methods": {
            "tbar-known-contrast": {
                "status": "released",
                "seconds": 30.0,
                "coef": 1.0,
                "reaudit": "pass",
                "curve": curve,
                **tbar,
            },
            "tbar-estimated": estimated,
        },
    }


SPLITS = {"source": "Fashion-MNIST test set", "tune": 1200, "val": 900, "test": 900}
ROWS = [
    result(
        "patch-a",
        "patch",
        {"ca_before": 0.9, "asr_before": 0.98, "ca_after": 0.88, "asr_after": 0.02},
        {
            "status": "released",
            "seconds": 40.0,
            "ca_before": 0.9,
            "asr_before": 0.98,
            "ca_after": 0.9,
            "asr_after": 0.04,
            "curve": [[0.0, 0.9, 0.9]],
        },
    ),
    result(
        "warp-a",
        "warp",
        {"ca_before": 0.8, "asr_before": 0.9, "ca_after": 0.8, "asr_after": 0.0},
        {"status": "not detected", "seconds": 10.0},
    ),
]


def test_unpatched_models_count_with_their_attack_success_unchanged() -> None:
    summary = _summary(ROWS)
    est = summary["tbar-estimated"]
    assert est["all"]["patched"] == 1 and est["all"]["models"] == 2
    assert est["all"]["mean_asr_after"] == round((0.04 + 0.9) / 2, 4)
    assert est["warp"] == {
        "models": 1,
        "patched": 0,
        "mean_asr_after": 0.9,
        "mean_asr_patched": 0.9,
        "mean_retention": 1.0,
    }
    known = summary["tbar-known-contrast"]["all"]
    assert known["mean_asr_after"] == 0.01
    assert known["mean_retention"] == round((0.88 / 0.9 + 1.0) / 2, 4)


def test_a_patch_verification_refused_counts_unchanged_but_its_own_attack_success_is_kept() -> None:
    refused = {"status": "not remediated", "ca_before": 0.9, "asr_before": 0.98}
    refused |= {"ca_after": 0.84, "asr_after": 0.03}
    rows = [result("patch-a", "patch", ROWS[0]["methods"]["tbar-known-contrast"], refused)]
    s = _summary(rows)["tbar-estimated"]["all"]
    assert (s["patched"], s["mean_asr_after"], s["mean_retention"]) == (0, 0.98, 1.0)
    assert s["mean_asr_patched"] == 0.03


def test_a_baseline_below_the_floor_is_applied_but_not_counted_as_patched() -> None:
    def ft(status: str, ca_after: float) -> dict[str, Any]:
        return {
            "status": status,
            "ca_before": 0.9,
            "asr_before": 0.9,
            "ca_after": ca_after,
            "asr_after": 0.0,
        }

    rows = [
        {"name": "a", "family": "patch", "methods": {"clean-ft": ft("within floor", 0.9)}},
        {"name": "b", "family": "patch", "methods": {"clean-ft": ft("below floor", 0.45)}},
    ]
    s = _summary(rows)["clean-ft"]["all"]
    assert (s["patched"], s["mean_asr_after"], s["mean_retention"]) == (1, 0.0, 0.75)


def test_page_and_figures_show_every_zoo_method_and_family(tmp_path: Path) -> None:
    tower_rows = [dict(ROWS[0], cached=2)]
    res = {
        "command": "hubscan bench unlearning --zoo z --zoo t",
        "hubscan": "0",
        "policy": "default",
        "machine": {"cpus": 2},
        "splits": SPLITS,
        "complete": False,
        "zoos": [
            {"zoo": "z", "tower": "vit", "models": ROWS, "summary": _summary(ROWS)},
            {
                "zoo": "t",
                "tower": "mobilenetv2",
                "complete": False,
                "models": tower_rows,
                "summary": _summary(tower_rows),
            },
        ],
    }
    names = figures(res, tmp_path)
    assert names == {
        "z": [
            "unlearning-vit-alpha-patch.png",
            "unlearning-vit-alpha-warp.png",
            "unlearning-vit-alpha-variants.png",
        ],
        "t": [
            "unlearning-mobilenetv2-alpha-patch.png",
            "unlearning-mobilenetv2-alpha-variants.png",
        ],
    }
    every = [n for ns in names.values() for n in ns]
    assert all(Image.open(tmp_path / n).size[0] > 0 for n in every)
    page = markdown(res, names)
    assert "Test split: 900 probes from the Fashion-MNIST test set, never used" in page
    assert "(tune, 1,200)" in page and "(val, 900)" in page
    assert "**Partial run:**" in page and "`hubscan bench unlearning --zoo z --zoo t`" in page
    assert "2 of 6 results (one method on one model) were taken from the benchmark's cache" in page
    assert "## Zoo `z`: ViT" in page and "## Zoo `t`: ImageNet MobileNetV2" in page
    assert "| warp-a | 80.0% / 90.0% | 80.0% / 0.0% | not detected |" in page
    # side by side: the estimated trigger patched 1 of 2 in the first zoo, 1 of 1 in the second
    label = "TBAR, estimated trigger (audit's inversion; true trigger measured)"
    assert f"| {label} | 1/2, 47.0%, 100.0% | 1/1, 4.0%, 100.0% |" in page
    assert all(f"![{n}]({n})" in page for n in every)


def test_each_method_is_measured_once_per_weights_and_a_new_method_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hubscan import bench_unlearning
    from hubscan.policy import load_policy

    monkeypatch.setenv("HUBSCAN_CACHE", str(tmp_path / "cache"))
    zoo = tmp_path / "zoo"
    for name in ("m", "base"):
        (zoo / name).mkdir(parents=True)
        (zoo / name / "open_clip_model.safetensors").write_bytes(name.encode())
    m = {"name": "m", "family": "patch", "trigger": "patch:size=3", "target": "bag"}
    policy = load_policy("default")
    runs: list[str] = []

    def run(method: str, *args: Any) -> dict[str, Any]:
        runs.append(method)
        return {"status": "within floor"}

    monkeypatch.setattr(bench_unlearning, "_run", run)
    first = bench_unlearning._model_row(zoo, m, policy, "default", tmp_path, None)
    methods = [name for name, _ in bench_unlearning._methods(policy)]
    assert list(first["methods"]) == methods and first["cached"] == 0
    assert runs == methods
    again = bench_unlearning._model_row(zoo, m, policy, "default", tmp_path, None)
    assert again["cached"] == len(methods) and len(runs) == len(methods)
    # a variant added to the benchmark is the only thing measured next time
    monkeypatch.setattr(bench_unlearning, "VARIANTS", (*bench_unlearning.VARIANTS, "mixed"))
    bench_unlearning._model_row(zoo, m, policy, "default", tmp_path, None)
    assert runs[len(methods) :] == ["tbar-known-mixed"]
    # other probes: everything again
    other = bench_unlearning._model_row(zoo, m, policy, "fashion-mnist:test", tmp_path, None)
    assert other["cached"] == 0
    # other weights: everything again
    (zoo / "m" / "open_clip_model.safetensors").write_bytes(b"other weights")
    assert bench_unlearning._model_row(zoo, m, policy, "default", tmp_path, None)["cached"] == 0


def test_the_oracle_vector_removes_a_zoo_backdoor_within_the_floor(quick_zoo: Path) -> None:
    """The attack's own vector (backdoored − base) is the upper bound the estimates are
    compared with: on a real zoo backdoor it must remove it and keep clean accuracy."""
    from hubscan.bench_references import oracle
    from hubscan.policy import load_policy

    manifest = json.loads((quick_zoo / "manifest.json").read_text())
    m = next(x for x in manifest["models"] if x["name"] == "patch-white-br-bag")
    policy = load_policy("default")
    res = oracle(quick_zoo / m["name"], quick_zoo / "base", m, policy, None)
    assert res["status"] == "within floor"
    assert res["asr_before"] > 0.8 and res["asr_after"] <= 0.05
    assert res["ca_after"] >= policy.unlearning.clean_floor * res["ca_before"] - 0.02
    assert 0 < res["coef"] <= 2


def test_only_methods_that_audit_are_measured_again_when_detection_changes() -> None:
    import dataclasses

    from hubscan.bench_unlearning import settings_digest
    from hubscan.policy import load_policy

    p = load_policy("default")
    more = dataclasses.replace(p.detection, holdout_images=p.detection.holdout_images + 1)
    q = dataclasses.replace(p, detection=more)
    assert settings_digest(p, audits=False) == settings_digest(q, audits=False)
    assert settings_digest(p, audits=True) != settings_digest(q, audits=True)
    # the default variant is not a setting: every method names the variant it runs
    r = dataclasses.replace(p, unlearning=dataclasses.replace(p.unlearning, variant="paper"))
    assert settings_digest(p, audits=True) == settings_digest(r, audits=True)
    s = dataclasses.replace(p, unlearning=dataclasses.replace(p.unlearning, steps=1))
    assert settings_digest(p, audits=False) != settings_digest(s, audits=False)
    # the dampings, the soft stamp and the estimate's gain shape TBAR's vector only: a baseline
    # or the oracle keeps its measurement
    changes: tuple[dict[str, Any], ...] = (
        {"fisher_dampings": (1.0,)},
        {"soft_trigger": not p.unlearning.soft_trigger},
        {"estimate_gain": p.unlearning.estimate_gain + 1},
        {"estimate_anchor": p.unlearning.estimate_anchor + 1},
        {"refit_steps": p.unlearning.refit_steps + 1},
    )
    for change in changes:
        d = dataclasses.replace(p, unlearning=dataclasses.replace(p.unlearning, **change))
        assert settings_digest(p, audits=False) == settings_digest(d, audits=False)
        assert settings_digest(p, audits=True, estimated=True) != settings_digest(
            d, audits=True, estimated=True
        )


@pytest.mark.parametrize("change", [{"estimate_anchor": 0.0}, {"refit_steps": 0}])
def test_an_estimate_only_setting_measures_again_only_tbar_with_the_estimate(
    change: dict[str, Any],
) -> None:
    import dataclasses

    from hubscan.bench_unlearning import settings_digest
    from hubscan.policy import load_policy

    p = load_policy("default")
    d = dataclasses.replace(p, unlearning=dataclasses.replace(p.unlearning, **change))
    assert settings_digest(p, audits=True) == settings_digest(d, audits=True)
    assert settings_digest(p, audits=True, estimated=True) != settings_digest(
        d, audits=True, estimated=True
    )


def test_the_page_follows_the_default_variant_and_shows_its_damping(tmp_path: Path) -> None:
    rows = [
        dict(
            r,
            methods={"tbar-known-fisher": {**r["methods"]["tbar-known-contrast"], "damping": 3.0}},
        )
        for r in ROWS
    ]
    res = {
        "command": "hubscan bench unlearning --zoo z",
        "hubscan": "0",
        "policy": "default",
        "default_variant": "fisher",
        "machine": {"cpus": 2},
        "splits": SPLITS,
        "zoos": [{"zoo": "z", "tower": "vit", "models": rows, "summary": _summary(rows)}],
    }
    names = figures(res, tmp_path)
    assert "unlearning-vit-alpha-patch.png" in names["z"]  # the fisher rows' curves
    page = markdown(res, names)
    assert "Coefficient chosen (known trigger, fisher)" in page
    assert "| patch-a | 3.0 | 1.0 | pass | 30.0 |" in page
