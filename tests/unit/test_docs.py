"""The README's tables are API documentation: they must match the code."""

from __future__ import annotations

import re
from pathlib import Path

from hubscan.codes import CODES
from hubscan.errors import ExitCode
from hubscan.policy_schema import SCHEMA

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_finding_code_is_in_the_readme_with_its_default_severity() -> None:
    rows = dict(re.findall(r"^\| `([A-Z0-9_]+)` \| (\w+) \|", README, flags=re.M))
    assert rows == {code: info.severity.label for code, info in CODES.items()}


def test_every_exit_code_is_in_the_readme() -> None:
    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \| ", README, flags=re.M), code


def test_every_policy_key_is_in_the_readme() -> None:
    keys = []
    for key, rule in SCHEMA.items():
        keys += [f"{key}.{sub}" for sub in rule] if isinstance(rule, dict) else [key]
    keys = [k if not k.startswith("severity") else "severity.CODE" for k in keys]
    for key in keys:
        assert f"| `{key}` |" in README, key


def test_readme_setup_is_two_make_commands_and_ci_runs_the_test_one() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(make \w+)", quickstart, flags=re.M)
    assert commands == ["make demo", "make test"]
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "\nmake test\n" in ci
