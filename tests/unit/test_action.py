"""The GitHub Action (action.yml) and its example workflows: a composite action whose inputs reach
the shell only through `env:`, every third-party action pinned to a commit, the audit's SARIF
uploaded and its summary written before the step exits with hubscan's code; a scheduled scan
with one leg per model and a deployment gate; the example models.lock pinned to full commits.

The shell and Python the YAML carries are run here too (bash, no GitHub runner needed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from hubscan.cli import app

ROOT = Path(__file__).resolve().parents[2]
ACTION = ROOT / "action.yml"
SCHEDULED = ROOT / "examples" / "workflows" / "hubscan-scheduled.yml"
GATE = ROOT / "examples" / "workflows" / "hubscan-gate.yml"
MODELS_LOCK = ROOT / "examples" / "models.lock"
ALL_YAML = [ACTION, SCHEDULED, GATE]

PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")
PINNED_LINE = re.compile(r"uses: [\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40} # v\d+\.\d+\.\d+$")
MODEL_LINE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*@[0-9a-f]{40}$")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def load(path: Path) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    """The `on:` table (YAML 1.1 reads the bare key `on` as True)."""
    on = workflow.get("on", workflow.get(True))
    assert isinstance(on, dict), on
    return on


def action_steps() -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = load(ACTION)["runs"]["steps"]
    return steps


def step(step_id: str) -> dict[str, Any]:
    (found,) = [s for s in action_steps() if s.get("id") == step_id]
    return found


def workflow_steps(path: Path) -> list[dict[str, Any]]:
    return [s for job in load(path)["jobs"].values() for s in job.get("steps", [])]


def all_steps(path: Path) -> list[dict[str, Any]]:
    return action_steps() if path == ACTION else workflow_steps(path)


def run_script(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """A `run:` script as GitHub's `shell: bash` runs it."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


# --- action.yml -----------------------------------------------------------------------------


def test_action_is_a_composite_action_with_a_name_description_and_branding() -> None:
    action = load(ACTION)
    assert action["runs"]["using"] == "composite"
    assert action["name"] and action["description"]
    assert set(action["branding"]) == {"icon", "color"}


def test_action_declares_its_inputs_with_their_defaults() -> None:
    inputs = load(ACTION)["inputs"]
    assert inputs["models"]["required"] is True
    assert "default" not in inputs["models"]
    defaults = {
        "policy": "default",
        "fail-on": "",
        "format": "sarif",
        "labels": "",
        "python-version": "3.11",
        "upload-sarif": "true",
    }
    for name, default in defaults.items():
        assert inputs[name]["default"] == default, name
        assert inputs[name]["required"] is False, name
    assert "category" in inputs
    assert all(spec.get("description") for spec in inputs.values())


def test_action_outputs_the_exit_code_and_the_sarif_file_of_the_audit_step() -> None:
    outs = load(ACTION)["outputs"]
    assert outs["exit-code"]["value"] == "${{ steps.audit.outputs.exit-code }}"
    assert outs["sarif-file"]["value"] == "${{ steps.audit.outputs.sarif-file }}"


def test_every_third_party_action_is_pinned_to_a_full_commit_sha_with_its_release() -> None:
    for path in ALL_YAML:
        uses = [s["uses"] for s in all_steps(path) if "uses" in s]
        if path != ACTION:
            uses += [job["uses"] for job in load(path)["jobs"].values() if "uses" in job]
        assert uses, path
        for ref in uses:
            assert ref == "./" or PINNED.match(ref), f"{path.name}: {ref}"
        for line in path.read_text(encoding="utf-8").splitlines():
            code = line.split("#", 1)[0] if line.lstrip().startswith("#") else line
            if "uses:" in code and "uses: ./" not in code:
                assert PINNED_LINE.search(line.strip()), f"{path.name}: {line.strip()}"


def test_no_run_script_interpolates_an_expression_inputs_reach_the_shell_through_env() -> None:
    for path in ALL_YAML:
        scripts = [s["run"] for s in all_steps(path) if "run" in s]
        for script in scripts:
            assert "${{" not in script, f"{path.name}: {script[:80]}"


def test_the_audit_step_writes_sarif_to_a_file_and_the_summary_to_the_step_summary() -> None:
    audit = step("audit")
    script = audit["run"]
    assert audit["env"]["HUBSCAN_FORMAT"] == "${{ inputs.format }}"
    assert audit["env"]["HUBSCAN_MODELS"] == "${{ inputs.models }}"
    assert '--models "$HUBSCAN_MODELS"' in script
    assert '--format "$HUBSCAN_FORMAT"' in script
    assert '--output "$HUBSCAN_REPORT"' in script
    assert '--summary "$GITHUB_STEP_SUMMARY"' in script
    assert 'echo "sarif-file=$HUBSCAN_REPORT" >> "$GITHUB_OUTPUT"' in script
    assert load(ACTION)["inputs"]["format"]["default"] == "sarif"


def test_the_audit_step_records_the_exit_code_instead_of_stopping(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "hubscan"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/bash\n"
        'while [ $# -gt 0 ]; do [ "$1" = --output ] && out="$2"; shift; done\n'
        'echo \'{"version": "2.1.0", "runs": []}\' > "$out"\n'
        "exit 1\n"
    )
    fake.chmod(0o755)
    github_output = tmp_path / "github_output"
    github_output.touch()
    report = tmp_path / "runner" / "hubscan" / "report.sarif"
    env = {
        "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_OUTPUT": str(github_output),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "HUBSCAN_MODELS": str(MODELS_LOCK),
        "HUBSCAN_POLICY": "default",
        "HUBSCAN_FAIL_ON": "",
        "HUBSCAN_FORMAT": "sarif",
        "HUBSCAN_LABELS": "",
        "HUBSCAN_EXIT_ZERO": "false",
        "HUBSCAN_REPORT": str(report),
        "HUBSCAN_CACHE": str(tmp_path / "cache"),
        "HUBSCAN_AUDIT_CACHE": str(tmp_path / "cache" / "audits"),
    }
    result = run_script(step("audit")["run"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    got = outputs(github_output)
    assert got["exit-code"] == "1"
    assert got["sarif-file"] == str(report)
    assert "cache-changed" not in got  # the fake hubscan cached nothing


def test_the_sarif_upload_runs_always_before_the_last_step_exits_with_the_audit_code() -> None:
    steps = action_steps()
    ids = [s.get("id") for s in steps]
    (upload,) = [s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-")]
    assert upload["if"].startswith("always()")
    assert "steps.audit.outputs.sarif-file != ''" in upload["if"]
    assert upload["with"]["sarif_file"] == "${{ steps.audit.outputs.sarif-file }}"
    assert ids.index("audit") < steps.index(upload) < len(steps) - 1
    last = steps[-1]
    assert last["if"].startswith("always()")
    assert last["env"]["HUBSCAN_EXIT_CODE"] == "${{ steps.audit.outputs.exit-code }}"
    assert last["run"].rstrip().endswith('exit "$HUBSCAN_EXIT_CODE"')


def test_the_last_step_exits_with_the_audit_code(tmp_path: Path) -> None:
    for code in (0, 1, 3):
        result = run_script(action_steps()[-1]["run"], {"HUBSCAN_EXIT_CODE": str(code)}, tmp_path)
        assert result.returncode == code
        assert ("::error" in result.stdout) == (code != 0)


def test_hubscan_is_installed_from_the_action_checkout_after_cpu_torch() -> None:
    (install,) = [s for s in action_steps() if "pip install" in s.get("run", "")]
    lines = [line for line in install["run"].splitlines() if "pip install" in line]
    assert "--index-url https://download.pytorch.org/whl/cpu" in lines[0]
    assert '"torch' in lines[0]
    assert lines[-1].endswith('"$GITHUB_ACTION_PATH"')


def test_setup_python_gets_the_python_version_input() -> None:
    (setup,) = [s for s in action_steps() if s.get("uses", "").startswith("actions/setup-python@")]
    assert setup["with"]["python-version"] == "${{ inputs.python-version }}"


def test_the_audit_cache_is_keyed_by_os_models_and_policy_and_saved_whatever_the_gate() -> None:
    restore, save = step("audit-cache"), None
    for s in action_steps():
        if s.get("uses", "").startswith("actions/cache/save@") and "audit" in s["with"]["path"]:
            save = s
    assert restore["uses"].startswith("actions/cache/restore@")
    assert restore["with"]["path"] == "${{ steps.prep.outputs.audit-cache }}"
    key = restore["with"]["key"]
    for part in ("runner.os", "steps.prep.outputs.models-hash", "steps.prep.outputs.config-hash"):
        assert part in key
    assert save is not None
    assert save["with"]["key"] == key
    assert save["if"].startswith("always()")
    assert step("audit")["env"]["HUBSCAN_AUDIT_CACHE"] == "${{ steps.prep.outputs.audit-cache }}"


def test_the_prepare_step_keys_the_cache_by_file_contents(tmp_path: Path) -> None:
    def prepare(models: Path) -> dict[str, str]:
        github_output = tmp_path / "github_output"
        github_output.write_text("")
        env = {
            "HUBSCAN_MODELS": str(models),
            "HUBSCAN_POLICY": "default",
            "HUBSCAN_LABELS": "",
            "HUBSCAN_FORMAT": "sarif",
            "GITHUB_OUTPUT": str(github_output),
            "GITHUB_ACTION_PATH": str(ROOT),
            "RUNNER_TEMP": str(tmp_path / "runner"),
            "HUBSCAN_CACHE": str(tmp_path / "cache"),
            "HUBSCAN_AUDIT_CACHE": "",
        }
        result = run_script(step("prep")["run"], env, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        return outputs(github_output)

    first = tmp_path / "a.lock"
    first.write_text(MODELS_LOCK.read_text())
    got = prepare(first)
    assert got["audit-cache"] == str(tmp_path / "cache" / "audits")
    assert got["report"] == str(tmp_path / "runner" / "hubscan" / "report.sarif")
    same = tmp_path / "b.lock"
    same.write_text(MODELS_LOCK.read_text())
    assert prepare(same)["models-hash"] == got["models-hash"]
    first.write_text("org/other@" + "a" * 40 + "\n")
    assert prepare(first)["models-hash"] != got["models-hash"]


def test_the_category_prefix_gives_each_model_run_its_own_category(tmp_path: Path) -> None:
    (prefix_step,) = [s for s in action_steps() if "HUBSCAN_CATEGORY" in s.get("env", {})]
    assert prefix_step["env"]["HUBSCAN_CATEGORY"] == "${{ inputs.category }}"
    sarif = tmp_path / "report.sarif"
    runs = [{"automationDetails": {"id": f"hubscan/org/{n}/"}, "results": []} for n in "ab"]
    sarif.write_text(json.dumps({"version": "2.1.0", "runs": runs}))
    env = {"HUBSCAN_SARIF": str(sarif), "HUBSCAN_CATEGORY": "nightly"}
    result = run_script(prefix_step["run"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    ids = [r["automationDetails"]["id"] for r in json.loads(sarif.read_text())["runs"]]
    assert ids == ["nightly/org/a/", "nightly/org/b/"]


def test_the_action_passes_hubscan_audit_only_flags_its_help_lists() -> None:
    """Fails until `hubscan audit` has --models, --summary, --exit-zero (the CI contract)."""
    result = CliRunner().invoke(app, ["audit", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    listed = set(FLAG.findall(result.output))
    used: set[str] = set()
    for s in action_steps():
        for line in s.get("run", "").splitlines():
            if re.match(r"\s*hubscan\s", line) or re.search(r"\bargs\+?=\(", line):
                used |= set(FLAG.findall(line))
    assert {"--models", "--format", "--output", "--summary", "--exit-zero"} <= used
    assert used - listed == set(), f"not in `hubscan audit --help`: {sorted(used - listed)}"


# --- the example workflows and models.lock --------------------------------------------------


def test_the_scheduled_scan_runs_off_the_hour_and_by_hand() -> None:
    on = triggers(load(SCHEDULED))
    assert "workflow_dispatch" in on
    crons = [entry["cron"] for entry in on["schedule"]]
    assert crons
    for cron in crons:
        minute, hour, *_ = cron.split()
        assert minute.isdigit() and int(minute) != 0, cron
        assert not (hour == "0" and minute == "0"), cron


def test_the_scheduled_scan_has_a_leg_per_model_no_fail_fast_and_bounded_parallelism() -> None:
    workflow = load(SCHEDULED)
    assert workflow["permissions"] == {"contents": "read"}
    (scan,) = [job for job in workflow["jobs"].values() if "strategy" in job]
    strategy = scan["strategy"]
    assert strategy["fail-fast"] is False
    assert 1 <= strategy["max-parallel"] <= 8
    reader = scan["needs"]
    assert strategy["matrix"]["include"] == f"${{{{ fromJSON(needs.{reader}.outputs.matrix) }}}}"
    assert scan["permissions"]["security-events"] == "write"
    assert scan["permissions"]["contents"] == "read"
    index = next(i for i, s in enumerate(scan["steps"]) if s.get("uses") == "./")
    audit, pin = scan["steps"][index], scan["steps"][index - 1]
    assert pin["env"]["MODEL"] == "${{ matrix.model }}"
    assert audit["with"]["models"] == "${{ runner.temp }}/hubscan-model.lock"
    assert audit["with"]["category"]


def test_the_scheduled_scan_reads_the_models_lock_into_one_leg_per_model(tmp_path: Path) -> None:
    (reader,) = [s for s in workflow_steps(SCHEDULED) if s.get("id") == "read"]
    github_output = tmp_path / "github_output"
    github_output.touch()
    env = {"MODELS_LOCK": str(MODELS_LOCK), "GITHUB_OUTPUT": str(github_output)}
    result = run_script(reader["run"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    got = outputs(github_output)
    legs = json.loads(got["matrix"])
    pinned = [line for line in MODELS_LOCK.read_text().splitlines() if MODEL_LINE.match(line)]
    assert [leg["model"] for leg in legs] == pinned
    assert [leg["name"] for leg in legs] == [line.split("@")[0] for line in pinned]
    assert got["count"] == str(len(pinned))


def test_the_scheduled_scan_gives_a_repeated_model_one_leg(tmp_path: Path) -> None:
    (reader,) = [s for s in workflow_steps(SCHEDULED) if s.get("id") == "read"]
    lock = tmp_path / "models.lock"
    model = "org/model@" + "b" * 40
    lock.write_text(f"{model}\n\n{model}  # again\n")
    github_output = tmp_path / "github_output"
    github_output.touch()
    env = {"MODELS_LOCK": str(lock), "GITHUB_OUTPUT": str(github_output)}
    result = run_script(reader["run"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(outputs(github_output)["matrix"]) == [{"model": model, "name": "org/model"}]


def test_the_scheduled_scan_rejects_a_model_not_pinned_to_a_full_sha(tmp_path: Path) -> None:
    (reader,) = [s for s in workflow_steps(SCHEDULED) if s.get("id") == "read"]
    lock = tmp_path / "models.lock"
    lock.write_text("# fine\norg/model@main\n")
    env = {"MODELS_LOCK": str(lock), "GITHUB_OUTPUT": str(tmp_path / "out")}
    result = run_script(reader["run"], env, tmp_path)
    assert result.returncode == 1
    assert f"::error file={lock},line=2::" in result.stdout


def test_the_gate_runs_on_pull_requests_and_pushes_over_the_whole_lock() -> None:
    workflow = load(GATE)
    on = triggers(workflow)
    assert "pull_request" in on and "push" in on
    (job,) = workflow["jobs"].values()
    assert "strategy" not in job
    assert job["permissions"]["security-events"] == "write"
    assert job["permissions"]["contents"] == "read"
    (audit,) = [s for s in job["steps"] if s.get("uses") == "./"]
    assert audit["with"]["models"] == "examples/models.lock"


def test_the_example_workflows_use_this_checkouts_action_and_say_how_to_pin_the_release() -> None:
    for path in (SCHEDULED, GATE):
        assert "uses: OWNER/hubscan@<40-hex commit sha>" in path.read_text()


def test_the_example_models_lock_pins_each_model_to_a_full_commit_sha() -> None:
    lines = [line.split("#", 1)[0].strip() for line in MODELS_LOCK.read_text().splitlines()]
    models = [line for line in lines if line]
    assert len(models) == 2
    for model in models:
        assert MODEL_LINE.match(model), model
