from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from hubscan.codes import CODES
from hubscan.errors import ExitCode, PolicyError
from hubscan.policy import bundled_names, load_policy
from hubscan.records import Severity

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["default", "strict", "permissive"])
def test_bundled_policies_load_and_carry_name_and_digest(name: str) -> None:
    policy = load_policy(name)
    assert policy.name == name
    assert len(policy.sha256) == 64
    assert policy.source == f"bundled:{name}"


def test_bundled_names_lists_the_policy_files() -> None:
    assert set(bundled_names()) >= {"default", "strict", "permissive"}


def test_strict_gates_lower_than_default_and_permissive_higher() -> None:
    assert load_policy("strict").fail_on < load_policy("default").fail_on
    assert load_policy("permissive").fail_on > load_policy("default").fail_on


def test_extends_overrides_only_what_it_names(tmp_path: Path) -> None:
    path = write(
        tmp_path, 'schema = 1\nextends = "default"\nname = "mine"\n[limits]\nmax_files = 7\n'
    )
    policy, default = load_policy(path), load_policy("default")
    assert policy.limits.max_files == 7
    assert policy.limits.max_file_bytes == default.limits.max_file_bytes
    assert policy.pickle.deny == default.pickle.deny
    assert policy.sha256 != default.sha256


def test_unknown_key_is_an_error_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'schema = 1\nextends = "default"\nname = "x"\n[limits]\nmax_heder = 1\n')
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert "limits.max_heder: unknown key" in str(err.value)
    assert err.value.exit_code is ExitCode.NO_VERDICT


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    text = (
        'schema = 1\nextends = "default"\nname = "x"\nfail_on = "severe"\nbogus = 1\n'
        '[limits]\nmax_files = -3\nmax_file_bytes = "big"\n'
        '[safetensors]\ndtypes = ["F32", "F128"]\n[severity]\nNOT_A_CODE = "low"\n'
    )
    with pytest.raises(PolicyError) as err:
        load_policy(write(tmp_path, text))
    problems = err.value.problems
    assert any(p.startswith("fail_on:") for p in problems)
    assert any(p.startswith("bogus: unknown key") for p in problems)
    assert any(p.startswith("limits.max_files: -3 is out of range") for p in problems)
    assert any(p.startswith("limits.max_file_bytes: expected an integer") for p in problems)
    assert any("F128" in p for p in problems)
    assert any(p.startswith("severity.NOT_A_CODE: unknown finding code") for p in problems)
    assert len(problems) == 6


def test_a_policy_without_extends_must_write_out_every_key(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as err:
        load_policy(write(tmp_path, 'schema = 1\nname = "bare"\nfail_on = "high"\n'))
    assert any(p.startswith("limits: missing") for p in err.value.problems)


def test_default_policy_writes_out_every_schema_key() -> None:
    # default.toml has no `extends`, so loading it at all proves it is complete.
    raw = tomllib.loads((REPO / "policies" / "default.toml").read_text())
    assert "extends" not in raw
    load_policy("default")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not toml = = 1", "not valid TOML"),
        ('schema = 2\nextends = "default"', "schema: 2 is out of range"),
        ('schema = 1\nextends = "nope"', "no bundled policy"),
    ],
)
def test_malformed_policies_are_policy_errors(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem):
        load_policy(write(tmp_path, text))


def test_missing_policy_file_and_unknown_name_are_policy_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.toml")
    with pytest.raises(PolicyError, match="no bundled policy"):
        load_policy("no-such-policy")


def test_severity_override_replaces_the_code_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'schema = 1\nextends = "default"\nname = "x"\n[severity]\nFILE_CODE = "critical"\n',
    )
    policy = load_policy(path)
    assert policy.severity_of("FILE_CODE") is Severity.CRITICAL
    assert policy.severity_of("ST_TRAILING_BYTES") is CODES["ST_TRAILING_BYTES"].severity


@pytest.mark.parametrize(
    ("module", "name", "rule"),
    [
        ("os", "system", "deny"),
        ("os.path", "join", "deny"),  # a denied module covers its submodules
        ("builtins", "eval", "deny"),
        ("builtins", "set", "allow"),
        ("torch._utils", "_rebuild_tensor_v2", "allow"),
        ("torch", "load", "deny"),  # deny wins over the module's allow entries
        ("collections", "OrderedDict", "allow"),
        ("collections", "deque", "unknown"),
        ("somepkg", "thing", "unknown"),
    ],
)
def test_pickle_globals_are_classified_deny_first(module: str, name: str, rule: str) -> None:
    assert load_policy("default").pickle.classify(module, name) == rule


def test_policy_is_frozen() -> None:
    policy = load_policy("default")
    with pytest.raises(AttributeError):
        policy.name = "x"  # type: ignore[misc]
    assert replace(policy, name="y").name == "y"


@pytest.mark.slow
def test_wheel_bundles_the_policies(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("hubscan-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for policy in ("default", "strict", "permissive"):
        assert f"hubscan/policies/{policy}.toml" in names
    assert "hubscan/examples/tiny-clip/open_clip_model.safetensors" in names


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("[]", "expected a non-empty list"),
        ("[-1]", "expected a non-empty list"),
        ('["10"]', "expected a non-empty list"),
    ],
)
def test_fisher_dampings_must_be_a_non_empty_list_of_non_negative_numbers(
    tmp_path: Path, value: str, problem: str
) -> None:
    text = f'schema = 1\nextends = "default"\nname = "x"\n[unlearning]\nfisher_dampings = {value}\n'
    with pytest.raises(PolicyError, match=f"unlearning.fisher_dampings: {problem}"):
        load_policy(write(tmp_path, text))


def test_fisher_dampings_are_sorted_and_deduplicated(tmp_path: Path) -> None:
    text = (
        'schema = 1\nextends = "default"\nname = "x"\n'
        "[unlearning]\nfisher_dampings = [10, 0, 3, 10]\n"
    )
    assert load_policy(write(tmp_path, text)).unlearning.fisher_dampings == (0.0, 3.0, 10.0)
