"""Run identity: golden ids, the defaults snapshot, and what moves an id (and what does not)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import Field

from bench.catalog import METHODS
from bench.spec import RunSpec, expand, load_suite

SNAPSHOT = Path(__file__).parent / "golden" / "settings_defaults.json"

def _ids(suite: str, profile: str | None = None) -> dict[str, str]:
    return {s.label: s.run_id for s in expand(load_suite(suite, profile))}


def test_defaults_snapshot_matches_or_the_version_was_bumped():
    """A default that changes must come with a `version` bump (and a regenerated snapshot)."""
    from bench.identity import defaults_snapshot

    pinned = json.loads(SNAPSHOT.read_text())
    current = defaults_snapshot()
    problems = []
    for key, entry in current.items():
        if key not in pinned:
            problems.append(f"{key}: new entry, run scripts/snapshot_defaults.py")
        elif entry["version"] == pinned[key]["version"] and entry["defaults"] != pinned[key]["defaults"]:
            changed = sorted(k for k in set(entry["defaults"]) | set(pinned[key]["defaults"])
                             if entry["defaults"].get(k, "<absent>") != pinned[key]["defaults"].get(k, "<absent>"))
            added = [k for k in changed if k not in pinned[key]["defaults"]]
            if set(changed) - set(added):  # a new key alone keeps behaviour (its default is the old one)
                problems.append(f"{key}: default(s) {', '.join(sorted(set(changed) - set(added)))} changed "
                                f"without a version bump")
            else:
                problems.append(f"{key}: new setting(s) {', '.join(added)}: run scripts/snapshot_defaults.py")
        elif entry["version"] != pinned[key]["version"]:
            problems.append(f"{key}: version {pinned[key]['version']} -> {entry['version']}: run "
                            "scripts/snapshot_defaults.py")
    assert not problems, "\n".join(problems)


def test_golden_run_ids():
    """A handful of ids of committed records, two per suite (tests/golden/run_ids.json): pinned."""
    pinned = json.loads((Path(__file__).parent / "golden" / "run_ids.json").read_text())
    assert len(pinned) >= 5
    for suite, ids in pinned.items():
        current = {s.run_id: s.label for s in expand(load_suite(suite))}
        assert {run_id: current.get(run_id) for run_id in ids} == ids, suite


def test_every_stored_record_has_the_id_its_spec_gives():
    """Each committed record's folder is the id its stored spec hashes to today (no orphans)."""
    root = Path(__file__).resolve().parent.parent / "results" / "runs"
    records = sorted(root.glob("*/record.json"))
    assert records
    for path in records:
        record = json.loads(path.read_text())
        assert RunSpec.model_validate(record["spec"]).run_id == path.parent.name == record["run_id"], path


def test_a_defaulted_setting_added_to_a_method_moves_no_id(monkeypatch):
    before = _ids("coldstart")
    base = METHODS.get("llminit-var")

    class Settings(base.Settings):
        new_knob: int = Field(0, ge=0)  # default = the old behaviour

    monkeypatch.setitem(METHODS._resolved, "llminit-var", type("LLMInitVarPlus", (base,), {"Settings": Settings}))
    after = _ids("coldstart")
    assert after == before
    # setting it to a non-default value is a different run
    changed = expand(load_suite("coldstart"), {"method": {"new_knob": 3}})
    moved = {s.label for s in changed if s.method == "llminit-var"} & set(before)
    assert moved and all(s.run_id != before[s.label] for s in changed if s.method == "llminit-var")


def test_a_defaulted_backbone_setting_moves_no_id_not_even_for_ctr(monkeypatch):
    from methods.backbones import cf as backbones

    before = {**_ids("coldstart"), **_ids("ctr")}
    for name in ("lightgcn", "none"):
        spec = backbones.BACKBONES[name]

        class Settings(spec.settings):
            extra: float = 0.5

        monkeypatch.setitem(backbones.BACKBONES, name, backbones.BackboneSpec(
            spec.model, spec.info, Settings, spec.negative_sampling, spec.sequential, spec.recbole))
    assert {**_ids("coldstart"), **_ids("ctr")} == before


def test_a_version_bump_moves_exactly_that_methods_ids(monkeypatch):
    before = _ids("coldstart")
    base = METHODS.get("llminit-var")
    monkeypatch.setitem(METHODS._resolved, "llminit-var", type("Bumped", (base,), {"version": base.version + 1}))
    after = _ids("coldstart")
    moved = {label for label in before if before[label] != after[label]}
    assert moved == {label for label in before if "/llminit-var/" in label}


def test_runtime_options_and_explicit_defaults_are_not_in_the_id():
    plain = {s.label: s.run_id for s in expand(load_suite("smoke"))}
    explicit = expand(load_suite("smoke"), {"backbone": {"n_layers": 2}, "method": {"user_init": "mean"}})
    assert {s.label: s.run_id for s in explicit} == plain
    with pytest.raises(Exception, match="unknown setting 'eval_batch_size'"):
        expand(load_suite("smoke"), {"backbone": {"eval_batch_size": 10}})


def test_a_path_setting_is_identified_by_content(tmp_path):
    """Moving a data folder keeps the id; changing a byte in it moves the id."""
    import shutil

    from bench.data.cards import load_card, source_files

    files = source_files(load_card("ml-100k"))
    first = tmp_path / "a" / "ml-100k"
    first.mkdir(parents=True)
    for path in files.values():
        shutil.copy(path, first / path.name)
    second = tmp_path / "b" / "data"
    shutil.copytree(first, second)
    suite = load_suite("smoke")
    one = expand(suite, {"dataset": {"path": str(first)}})
    two = expand(suite, {"dataset": {"path": str(second)}})
    assert [s.run_id for s in one] == [s.run_id for s in two]
    assert [s.run_id for s in one] != [s.run_id for s in expand(suite)]  # a path is not the embedded files
    with open(second / "ml-100k.item", "a", encoding="utf-8") as handle:
        handle.write("\n")
    three = expand(suite, {"dataset": {"path": str(second)}})
    assert [s.run_id for s in three] != [s.run_id for s in one]


def test_a_method_override_reaches_every_part_that_has_the_key():
    """`--set method.KEY` on a suite with parts: applied where a method has KEY, an error where none has."""
    from bench.errors import BenchError

    specs = expand(load_suite("pte"), {"method": {"max_new_tokens": 16}})
    assert {s.method_settings["max_new_tokens"] for s in specs if s.method.startswith("pte")} == {16}
    assert any(s.method.startswith("llminit") for s in specs)  # the LLMInit part still runs, untouched
    with pytest.raises(BenchError, match="unknown method setting"):
        expand(load_suite("pte"), {"method": {"max_new_tokenz": 16}})
