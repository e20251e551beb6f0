"""A checker for the parts of SARIF 2.1.0 hubscan writes, after the OASIS schema
(sarif-schema-2.1.0.json): its required properties, enums and types for the objects hubscan
emits, plus GitHub code scanning's own limits. The official schema file cannot be fetched
offline, so this checks by hand what it would; `problems(doc)` returns every violation found.
"""

from __future__ import annotations

from typing import Any

LEVELS = {"none", "note", "warning", "error"}
CODE_SCANNING_MAX_RUNS = 20


def problems(doc: Any) -> list[str]:
    found: list[str] = []
    if not isinstance(doc, dict):
        return ["the log is not an object"]
    if doc.get("version") != "2.1.0":
        found.append("version must be '2.1.0'")
    runs = doc.get("runs")
    if not isinstance(runs, list):
        return [*found, "runs must be an array"]
    if len(runs) > CODE_SCANNING_MAX_RUNS:
        found.append(f"{len(runs)} runs: code scanning accepts at most 20 per upload")
    ids = [run.get("automationDetails", {}).get("id") for run in runs if isinstance(run, dict)]
    if len(runs) > 1 and len(set(ids)) != len(ids):
        found.append("runs share an automationDetails.id (code scanning needs one per run)")
    for i, run in enumerate(runs):
        found += _run(run, f"runs[{i}]")
    return found


def _run(run: Any, where: str) -> list[str]:
    if not isinstance(run, dict):
        return [f"{where} is not an object"]
    found = []
    driver = run.get("tool", {}).get("driver") if isinstance(run.get("tool"), dict) else None
    if not isinstance(driver, dict) or not isinstance(driver.get("name"), str):
        found.append(f"{where}.tool.driver.name is required")
        driver = {}
    rules = driver.get("rules", [])
    if not isinstance(rules, list):
        found.append(f"{where}.tool.driver.rules must be an array")
        rules = []
    for j, rule in enumerate(rules):
        if not isinstance(rule, dict) or not isinstance(rule.get("id"), str):
            found.append(f"{where}.tool.driver.rules[{j}].id is required")
            continue
        level = rule.get("defaultConfiguration", {}).get("level", "warning")
        if level not in LEVELS:
            found.append(f"{where}.tool.driver.rules[{j}] default level {level!r}")
    for j, invocation in enumerate(run.get("invocations", [])):
        if not isinstance(invocation.get("executionSuccessful"), bool):
            found.append(f"{where}.invocations[{j}].executionSuccessful is required (boolean)")
        for k, note in enumerate(invocation.get("toolExecutionNotifications", [])):
            found += _message(note.get("message"), f"{where}.invocations[{j}].notifications[{k}]")
            if note.get("level", "warning") not in LEVELS:
                found.append(f"{where}.invocations[{j}].notifications[{k}].level")
    automation = run.get("automationDetails")
    if automation is not None and not isinstance(automation.get("id"), str):
        found.append(f"{where}.automationDetails.id must be a string")
    for name, base in run.get("originalUriBaseIds", {}).items():
        if not isinstance(base.get("uri"), str):
            found.append(f"{where}.originalUriBaseIds.{name}.uri must be a string")
    results = run.get("results", [])
    if not isinstance(results, list):
        return [*found, f"{where}.results must be an array"]
    for j, result in enumerate(results):
        found += _result(result, rules, f"{where}.results[{j}]")
    return found


def _result(result: Any, rules: list[Any], where: str) -> list[str]:
    if not isinstance(result, dict):
        return [f"{where} is not an object"]
    found = _message(result.get("message"), where)
    if result.get("level", "warning") not in LEVELS:
        found.append(f"{where}.level {result.get('level')!r}")
    index = result.get("ruleIndex")
    if index is not None:
        if not isinstance(index, int) or not 0 <= index < len(rules):
            found.append(f"{where}.ruleIndex {index!r} is not a rule")
        elif rules[index].get("id") != result.get("ruleId"):
            found.append(f"{where}.ruleId does not match rules[ruleIndex].id")
    fingerprints = result.get("partialFingerprints", {})
    if not all(isinstance(v, str) for v in fingerprints.values()):
        found.append(f"{where}.partialFingerprints values must be strings")
    for k, location in enumerate(result.get("locations", [])):
        artifact = location.get("physicalLocation", {}).get("artifactLocation", {})
        if not isinstance(artifact.get("uri"), str):
            found.append(f"{where}.locations[{k}] artifactLocation.uri must be a string")
    return found


def _message(message: Any, where: str) -> list[str]:
    if not isinstance(message, dict) or not (
        isinstance(message.get("text"), str) or isinstance(message.get("id"), str)
    ):
        return [f"{where}.message needs text or id"]
    return []
