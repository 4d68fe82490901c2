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


# ------------------------------------------------------------------ issue 25: cards, links, bounds
def test_a_user_card_with_text_fields_has_a_run_id(tmp_path):
    """text_fields (a free mapping: canonical field -> source column) enters the id as its value, never as
    'not a setting of this version'."""
    from bench.data.cards import load_card, source_files

    data = tmp_path / "data"
    data.mkdir()
    for path in source_files(load_card("ml-100k")).values():
        (data / path.name).symlink_to(path)
    card = tmp_path / "card.yaml"
    card.write_text(f"name: mine\nloader: ml-100k\npath: {data}\ntext_template: '{{title}}'\n"
                    "text_fields: {title: movie_title}\n")
    suite = load_suite("smoke").model_copy(update={"datasets": [str(card)]})
    spec = expand(suite)[0]
    assert spec.identity["dataset"]["settings"]["text_fields"] == {"title": "movie_title"}
    card.write_text(f"name: mine\nloader: ml-100k\npath: {data}\ntext_template: '{{title}}'\n"
                    "text_fields: {title: movie_title, year: release_year}\n")
    assert expand(suite)[0].run_id != spec.run_id


def test_settings_diff_keeps_unknown_keys_an_error_outside_free_mappings():
    from bench.errors import BenchError
    from bench.settings import settings_diff
    from methods.backbones.cf import BACKBONES

    cls = BACKBONES["lightgcn"].settings
    with pytest.raises(BenchError, match="'bogus' is not a setting of this version; known: "):
        settings_diff(cls, {"bogus": 1}, BACKBONES["lightgcn"].defaults)


def test_a_dangling_link_in_a_path_setting_is_named(tmp_path):
    from bench.errors import BenchError
    from bench.identity import path_identity

    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.txt").symlink_to(tmp_path / "gone.txt")
    with pytest.raises(BenchError, match=r"b\.txt is a dangling symbolic link .*gone\.txt"):
        path_identity(str(tmp_path), "dataset 'x' setting path")
    (tmp_path / "b.txt").unlink()
    assert path_identity(str(tmp_path), "x")["sha256"]
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(BenchError, match="a dangling symbolic link"):
        path_identity(str(tmp_path / "link"), "x")


def test_upper_bounds_booleans_and_finite_numbers_change_no_stored_value():
    """The checks added in bench.settings.validate_settings (integer bounds, no true / false for a number, finite
    numbers) accept every setting of every committed record, so no run id moves and every record stays usable."""
    from bench.data.splits import SPLIT_SETTINGS
    from bench.encoders import EncoderSettings
    from bench.identity import FORMER_RUNTIME_KEYS
    from bench.settings import validate_settings
    from methods.backbones.cf import BACKBONES

    root = Path(__file__).resolve().parent.parent / "results" / "runs"
    records = sorted(root.glob("*/record.json"))
    assert records
    for path in records:
        spec = json.loads(path.read_text())["spec"]
        where = str(path)
        validate_settings(SPLIT_SETTINGS[spec["split"]], spec["split_settings"], where)
        validate_settings(BACKBONES[spec["backbone"]].settings, {
            k: v for k, v in spec["backbone_settings"].items() if k not in FORMER_RUNTIME_KEYS["backbone"]}, where)
        cls = METHODS.get(spec["method"]).Settings
        validate_settings(cls, {k: v for k, v in spec["method_settings"].items()
                                if k in cls.model_fields or k not in FORMER_RUNTIME_KEYS["method"]}, where)
        if spec.get("encoder"):
            validate_settings(EncoderSettings, spec["encoder_settings"], where)


@pytest.mark.parametrize(("values", "message"), [
    ({"embedding_size": 100_000}, "setting embedding_size=100000: must be <= 16384"),
    ({"epochs": True}, "setting epochs=True: a number is needed, not true / false"),
    ({"learning_rate": float("inf")}, "setting learning_rate=inf: must be a finite number"),
    ({"embedding_size": 64, "epochs": 10}, None),
])
def test_validate_settings_bounds_every_class_at_once(values, message):
    from bench.errors import BenchError
    from bench.settings import validate_settings
    from methods.backbones.cf import BACKBONES

    cls = BACKBONES["mf"].settings
    if message is None:
        assert validate_settings(cls, values, "backbone 'mf'").embedding_size == 64
    else:
        with pytest.raises(BenchError, match=message):
            validate_settings(cls, values, "backbone 'mf'")
