"""Caches are verified on load and rebuilt when they do not match: embedding .npy files, converted model
folders (bench.cache.cached_artifact), LLM2Rec stage folders and PtE profile chunks; each mismatch is reported on
one stderr line (`bench: cache: <path>: ...`). Also the typed encoder settings. Tiny models only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from bench import hashing
from bench.data import assets
from bench.encoders import ENCODER_SETTINGS, Encoder, EncoderSettings, encode_items, get_encoder
from bench.errors import BenchError
from bench.hashing import MANIFEST_NAME, write_manifest

PREFIX = "bench: cache: "


def cache_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith(PREFIX)]


# ---------------------------------------------------------------- typed encoder settings


def test_encoder_settings_defaults_mean_todays_behaviour(tmp_path):
    assert EncoderSettings().model_dump() == {"path": None, "batch_size": None, "max_length": None,
                                              "normalize": None}
    assert EncoderSettings.version == 1 and ENCODER_SETTINGS == ("path", "batch_size", "max_length", "normalize")
    with pytest.raises(ValidationError, match="frozen"):
        EncoderSettings().batch_size = 3
    folder = tmp_path / "model"
    folder.mkdir()
    typed = get_encoder("hf-path", EncoderSettings(path=str(folder), max_length=8), "cpu", tmp_path)
    plain = get_encoder("hf-path", {"path": folder, "max_length": 8}, "cpu", tmp_path)  # a Path is accepted
    default = get_encoder("hf-path", {"path": str(folder), "batch_size": None, "normalize": None}, "cpu", tmp_path)
    assert typed.settings() == plain.settings() == {"pooling": "mean", "max_length": 8, "normalize": False}
    assert (default.batch_size, default.max_length, default.normalize) == (16, 64, False)  # the LM's defaults
    st = get_encoder("st-path", {"path": str(folder), "normalize": False, "batch_size": 3}, "cpu", tmp_path)
    assert (st.batch_size, st.normalize, st.max_length) == (3, False, None)


@pytest.mark.parametrize(("key", "value", "valid"), [
    ("batch_size", "abc", "integer >= 1 or null"),
    ("batch_size", 0, "integer >= 1 or null"),
    ("batch_size", -2, "integer >= 1 or null"),
    ("batch_size", True, "integer >= 1 or null"),
    ("max_length", 2.5, "integer >= 1 or null"),
    ("max_length", "64", "integer >= 1 or null"),
    ("normalize", "yes", "true or false or null"),
    ("normalize", 1, "true or false or null"),
    ("path", 3, "text or null"),
])
def test_bad_encoder_setting_names_key_value_and_range(tmp_path, key, value, valid):
    with pytest.raises(BenchError) as err:
        get_encoder("minilm", {key: value}, "cpu", tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"encoder 'minilm': setting {key}={value!r}: ")
    assert message.endswith(f"(valid: {valid})")


def test_bad_encoder_setting_example_message(tmp_path):
    with pytest.raises(BenchError) as err:
        get_encoder("minilm", {"batch_size": "abc"}, "cpu", tmp_path)
    assert str(err.value) == ("encoder 'minilm': setting batch_size='abc': Input should be a valid integer "
                              "(valid: integer >= 1 or null)")
    with pytest.raises(BenchError, match=r"unknown setting .pooling.; valid settings: batch_size, max_length, "
                                         r"normalize, path"):
        get_encoder("minilm", {"pooling": "max"}, "cpu", tmp_path)


# ---------------------------------------------------------------- verified embedding cache


class HashEncoder(Encoder):
    """Deterministic 8-d vectors from the text's sha256 (no torch); counts its encode calls."""

    def __init__(self, path, **kwargs):
        super().__init__(path, "cpu", name="hash", **kwargs)
        self.calls = 0

    @property
    def dim(self) -> int:
        return 8

    def settings(self) -> dict:
        return {}

    def _encode(self, texts, batch_size, progress):
        self.calls += 1
        return np.array([[b / 255.0 for b in hashlib.sha256(t.encode()).digest()[:8]] for t in texts])


ITEMS = pd.Series(["toy story", "heat", "alien", "up"], index=pd.Index(["1", "2", "3", "4"]))


@pytest.fixture
def cached(tmp_path):
    """(encoder, cache dir, fresh matrix, .npy path, .json path) after one encode filled the cache."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"w")
    encoder = HashEncoder(model)
    cache = tmp_path / "cache"
    fresh, info = encode_items(encoder, ITEMS, "{title}", cache, progress=False)
    npy = Path(info["path"])
    assert encoder.calls == 1 and not info["cache_hit"]
    return encoder, cache, fresh, npy, npy.with_suffix(".json")


def _reencoded(encoder, cache, fresh, npy, capsys, reason: str):
    """Encode again: one message naming the file and `reason`, a re-encode, and the fresh matrix back."""
    calls = encoder.calls
    matrix, info = encode_items(encoder, ITEMS, "{title}", cache, progress=False)
    lines = cache_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{PREFIX}{npy}: ") and reason in lines[0] and lines[0].endswith("; re-encoding")
    assert encoder.calls == calls + 1 and not info["cache_hit"]
    assert np.isfinite(matrix).all()
    np.testing.assert_array_equal(matrix, fresh)
    again, info = encode_items(encoder, ITEMS, "{title}", cache, progress=False)  # rewritten: a clean hit
    assert info["cache_hit"] and encoder.calls == calls + 1 and cache_lines(capsys) == []
    np.testing.assert_array_equal(again, fresh)
    np.testing.assert_array_equal(np.load(npy), fresh)


def test_embedding_meta_records_sha256_shape_dtype(cached):
    encoder, cache, fresh, npy, meta_path = cached
    meta = json.loads(meta_path.read_text())
    assert meta["sha256"] == hashlib.sha256(npy.read_bytes()).hexdigest()
    assert meta["shape"] == [4, 8] and meta["dtype"] == "float32" and meta["item_ids"] == ["1", "2", "3", "4"]
    assert fresh.dtype == np.float32 and fresh[0, 0] == pytest.approx(hashlib.sha256(b"toy story").digest()[0] / 255)


def test_nan_row_in_cached_npy_is_reencoded(cached, capsys):
    encoder, cache, fresh, npy, _ = cached
    bad = fresh.copy()
    bad[2] = np.nan
    np.save(npy, bad)
    _reencoded(encoder, cache, fresh, npy, capsys, "sha256 does not match")


def test_nan_row_in_cache_without_checksum_is_reencoded(cached, capsys):
    """A cache from before checksums: the finiteness check alone catches the NaN row."""
    encoder, cache, fresh, npy, meta_path = cached
    meta = json.loads(meta_path.read_text())
    del meta["sha256"], meta["dtype"]
    meta_path.write_text(json.dumps(meta))
    bad = fresh.copy()
    bad[1, 3] = np.nan
    bad[3, 0] = np.inf
    np.save(npy, bad)
    _reencoded(encoder, cache, fresh, npy, capsys, "2 NaN/Inf values in 2 rows")


def test_zero_byte_npy_is_reencoded(cached, capsys):
    encoder, cache, fresh, npy, _ = cached
    npy.write_bytes(b"")
    _reencoded(encoder, cache, fresh, npy, capsys, "sha256 does not match")


def test_zero_byte_npy_without_checksum_is_reencoded(cached, capsys):
    encoder, cache, fresh, npy, meta_path = cached
    meta = json.loads(meta_path.read_text())
    del meta["sha256"]
    meta_path.write_text(json.dumps(meta))
    npy.write_bytes(b"")
    _reencoded(encoder, cache, fresh, npy, capsys, "not a readable .npy (EOFError")


def test_garbage_json_is_reencoded(cached, capsys):
    encoder, cache, fresh, npy, meta_path = cached
    meta_path.write_text('{"key": "abc", "item_ids": [')
    _reencoded(encoder, cache, fresh, npy, capsys, f"{meta_path.name} does not parse")


def test_json_for_another_key_or_items_is_reencoded(cached, capsys):
    encoder, cache, fresh, npy, meta_path = cached
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "key": "0" * 64}))
    _reencoded(encoder, cache, fresh, npy, capsys, "is for key '0000")
    meta_path.write_text(json.dumps({**meta, "item_ids": ["1", "2", "3", "5"]}))
    _reencoded(encoder, cache, fresh, npy, capsys, "lists other item ids")
    meta_path.unlink()
    _reencoded(encoder, cache, fresh, npy, capsys, f"{meta_path.name} is missing")


def test_cache_without_checksum_is_accepted_and_gets_one(cached, capsys):
    encoder, cache, fresh, npy, meta_path = cached
    meta = json.loads(meta_path.read_text())
    del meta["sha256"], meta["dtype"]
    meta_path.write_text(json.dumps(meta))
    matrix, info = encode_items(encoder, ITEMS, "{title}", cache, progress=False)
    assert info["cache_hit"] and encoder.calls == 1 and cache_lines(capsys) == []
    np.testing.assert_array_equal(matrix, fresh)
    upgraded = json.loads(meta_path.read_text())
    assert upgraded["sha256"] == hashlib.sha256(npy.read_bytes()).hexdigest() and upgraded["dtype"] == "float32"


# ---------------------------------------------------------------- verified converted models


def _fingerprint_by_hand(folder: Path) -> str:
    """The fingerprint formula of before manifests: relative path + sha256 of every file, in path order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        digest.update(f"{file.relative_to(folder).as_posix()}\0{hashlib.sha256(file.read_bytes()).hexdigest()}\n"
                      .encode())
    return digest.hexdigest()


class FakeConversion:
    """A stand-in for the GGUF conversion: writes a config, a tokenizer file and weights into a sub-folder."""

    def __init__(self):
        self.builds = 0

    def __call__(self, tmp: Path) -> Path:
        self.builds += 1
        out = tmp / "converted"
        (out / "sub").mkdir(parents=True)
        (out / "config.json").write_text(json.dumps({"hidden_size": 4}))
        (out / "sub" / "tokenizer.json").write_text(json.dumps({"vocab": ["a", "b"]}))
        (out / "model.bin").write_bytes(bytes(range(64)))
        return out


def _build(target, build, cache):
    """The converted-model cache folder as `bench.data.assets` builds it."""
    from bench.cache import cached_artifact

    return cached_artifact(target, build, memo_dir=cache)[0]


def test_fingerprint_unchanged_by_manifest(tmp_path):
    folder = FakeConversion()(tmp_path)
    before = assets.files_fingerprint(folder, tmp_path / "memo")
    write_manifest(folder)
    assert (folder / MANIFEST_NAME).is_file()
    assert assets.files_fingerprint(folder, tmp_path / "memo") == before == assets.files_fingerprint(folder)
    assert before == _fingerprint_by_hand(folder)
    assert hashing.content_hash(folder) == before


def test_converted_folder_is_built_once_with_a_manifest(tmp_path, monkeypatch, capsys):
    build, cache = FakeConversion(), tmp_path / "cache"
    target = cache / "models" / "fake"
    assert _build(target, build, cache) == target and build.builds == 1
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    assert manifest["version"] == 1
    assert manifest["files"]["model.bin"] == {"sha256": hashlib.sha256(bytes(range(64))).hexdigest(), "size": 64}
    assert set(manifest["files"]) == {"config.json", "sub/tokenizer.json", "model.bin"}
    hashed: list[str] = []
    original = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda p: hashed.append(Path(p).name) or original(p))
    assert _build(target, build, cache) == target and build.builds == 1
    assert hashed == []  # the build seeded the memo: verifying the unchanged folder reads no file
    assert assets.files_fingerprint(target, cache) == _fingerprint_by_hand(target) and hashed == []
    (target / "model.bin").write_bytes(bytes(range(64)))  # same bytes, new mtime: read again, still fine
    assert _build(target, build, cache) == target and build.builds == 1 and hashed == ["model.bin"]
    assert cache_lines(capsys) == []
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".fake.") and p.is_dir()]


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda t: (t / "model.bin").write_bytes(bytes(range(1, 65))), "model.bin does not match its sha256 in the manifest"),
    (lambda t: (t / "model.bin").write_bytes(b"short"), "model.bin has 5 bytes, the manifest says 64"),
    (lambda t: (t / "sub" / "tokenizer.json").unlink(), "sub/tokenizer.json is missing"),
    (lambda t: (t / "extra.bin").write_bytes(b"x"), "extra.bin is not in the manifest"),
    (lambda t: (t / MANIFEST_NAME).write_text("{not json"), f"{MANIFEST_NAME} is unreadable"),
])
def test_corrupted_converted_folder_is_rebuilt(tmp_path, capsys, damage, reason):
    build, cache = FakeConversion(), tmp_path / "cache"
    target = _build(cache / "models" / "fake", build, cache)
    fingerprint = assets.files_fingerprint(target, cache)
    damage(target)
    assert _build(target, build, cache) == target and build.builds == 2
    lines = cache_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"{PREFIX}{target}: {reason}") and lines[0].endswith("; rebuilding")
    assert (target / "model.bin").read_bytes() == bytes(range(64))
    assert assets.files_fingerprint(target, cache) == fingerprint
    assert _build(target, build, cache) == target and build.builds == 2 and cache_lines(capsys) == []
    assert not [p for p in target.parent.iterdir() if ".bad-" in p.name]


def test_folder_from_before_manifests(tmp_path, capsys):
    """A folder without a manifest is adopted (manifest written, fingerprint kept) when its files load."""
    build, cache = FakeConversion(), tmp_path / "cache"
    target = _build(cache / "models" / "fake", build, cache)
    (target / MANIFEST_NAME).unlink()
    fingerprint = assets.files_fingerprint(target, cache)
    assert _build(target, build, cache) == target and build.builds == 1
    assert (target / MANIFEST_NAME).is_file() and cache_lines(capsys) == []
    assert assets.files_fingerprint(target, cache) == fingerprint
    # ... but one whose files do not load is rebuilt
    (target / MANIFEST_NAME).unlink()
    (target / "config.json").write_text('{"hidden_size": ')
    assert _build(target, build, cache) == target and build.builds == 2
    lines = cache_lines(capsys)
    assert len(lines) == 1 and "no manifest, and config.json does not load" in lines[0]
    assert json.loads((target / "config.json").read_text()) == {"hidden_size": 4}


def test_safetensors_size_check(tmp_path):
    from safetensors.numpy import save_file

    folder = tmp_path / "m"
    folder.mkdir()
    save_file({"w": np.arange(6, dtype=np.float32)}, str(folder / "model.safetensors"))
    assert hashing.check_files(folder) is None
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-4])
    assert hashing.check_files(folder) == (f"model.safetensors has {len(data) - 4} bytes, "
                                           f"its header describes {len(data)}")


# ---------------------------------------------------------------- verified LLM2Rec stage outputs


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    pytest.importorskip("transformers")
    from tests.test_llm2rec_stages import make_model

    return make_model(tmp_path_factory.mktemp("integrity"))


def _csft_stage(tiny_lm, cache, calls):
    from methods.llm2rec import stages as st
    from tests.test_llm2rec_stages import FAST, sequences

    examples = st.build_csft_examples(sequences(), 4)

    def fn(out_dir):
        calls.append(out_dir)
        return st.csft(tiny_lm, examples, out_dir, FAST)

    return st.run_stage("csft", tiny_lm, st.data_hash(examples), FAST, cache, fn)


def _weights(folder):
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def test_corrupted_stage_output_is_retrained(tiny_lm, tmp_path, capsys):
    cache, calls = tmp_path / "cache", []
    folder = _csft_stage(tiny_lm, cache, calls)
    assert len(calls) == 1 and (folder / MANIFEST_NAME).is_file()
    assert "model.safetensors" in json.loads((folder / MANIFEST_NAME).read_text())["files"]
    trained = _weights(folder)
    fingerprint = assets.files_fingerprint(folder, cache)
    assert fingerprint == _fingerprint_by_hand(folder)  # the manifest is not part of the next stage's key
    assert _csft_stage(tiny_lm, cache, calls) == folder and len(calls) == 1 and cache_lines(capsys) == []

    raw = bytearray((folder / "model.safetensors").read_bytes())
    raw[-10:] = bytes(10)  # same size, other weights
    (folder / "model.safetensors").write_bytes(bytes(raw))
    assert _csft_stage(tiny_lm, cache, calls) == folder and len(calls) == 2  # same key, same folder
    lines = cache_lines(capsys)
    assert lines == [f"{PREFIX}{folder}: model.safetensors does not match its sha256 in the manifest; "
                     "rebuilding"]
    again = _weights(folder)
    assert set(again) == set(trained)
    for name in trained:
        np.testing.assert_allclose(again[name], trained[name], atol=1e-6)  # CPU training is deterministic
    assert _csft_stage(tiny_lm, cache, calls) == folder and len(calls) == 2 and cache_lines(capsys) == []


def test_bad_stage_json_is_retrained_and_old_folder_adopted(tiny_lm, tmp_path, capsys):
    cache, calls = tmp_path / "cache", []
    folder = _csft_stage(tiny_lm, cache, calls)
    record = json.loads((folder / "stage.json").read_text())
    (folder / "stage.json").write_text(json.dumps({**record, "key": "0123456789abcdef"}))
    assert _csft_stage(tiny_lm, cache, calls) == folder and len(calls) == 2
    lines = cache_lines(capsys)
    assert len(lines) == 1 and f"stage.json is for key '0123456789abcdef', the folder for '{record['key']}'" in lines[0]
    (folder / "stage.json").write_text("{")
    assert _csft_stage(tiny_lm, cache, calls) == folder and len(calls) == 3
    assert "stage.json does not parse" in cache_lines(capsys)[0]
    # a folder from before manifests: adopted, not retrained
    (folder / MANIFEST_NAME).unlink()
    assert _csft_stage(tiny_lm, cache, calls) == folder and len(calls) == 3 and cache_lines(capsys) == []
    assert (folder / MANIFEST_NAME).is_file()
    assert not [p for p in (cache / "llm2rec").iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- verified PtE profile chunks


class EchoGenerator:
    """The profile is the prompt reversed; counts the prompts it answers."""

    def __init__(self):
        self.prompts: list[str] = []

    def fingerprint(self) -> str:
        return "echo"

    def generate(self, system, prompts, seeds, sampling):
        self.prompts += prompts
        return [(p[::-1], len(p)) for p in prompts]


def _profiles(store_dir):
    from methods.pte.generate import ProfileStore, PromptSet, Request, Sampling, run_requests

    generator, store = EchoGenerator(), ProfileStore(store_dir)
    requests = [Request(f"u{i}", "user_init", f"user {i} likes movie {i}", i, Sampling()) for i in range(4)]
    texts, _ = run_requests(requests, generator, PromptSet(), store, batch_size=2, progress=False)
    return texts, generator, store


EXPECTED = [f"user {i} likes movie {i}"[::-1] for i in range(4)]


def test_profile_chunks_carry_checksums_and_a_footer(tmp_path):
    texts, generator, store = _profiles(tmp_path / "store")
    assert texts == EXPECTED and len(generator.prompts) == 4
    chunks = sorted((tmp_path / "store").glob("chunk-*.jsonl"))
    assert len(chunks) == 2
    lines = [json.loads(line) for line in chunks[0].read_text().splitlines()]
    assert lines[-1] == {"_chunk": {"version": 1, "records": 2}}
    assert all(len(line["_sha256"]) == 64 for line in lines[:-1])
    assert all("_sha256" not in record for record in store)
    texts, generator, _ = _profiles(tmp_path / "store")
    assert texts == EXPECTED and generator.prompts == []


def _cut_last_line(path: Path) -> str:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    return "no footer line (truncated?)"


def _cut_mid_line(path: Path) -> str:
    path.write_text(path.read_text()[:-30])
    return "does not parse (truncated?)"


def _tamper(path: Path) -> str:
    lines = path.read_text().splitlines(keepends=True)
    record = json.loads(lines[0])
    record["text"] = "tampered"
    lines[0] = json.dumps(record) + "\n"
    path.write_text("".join(lines))
    return "line 1 fails its checksum"


def _drop_record(path: Path) -> str:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[1:]))
    return "footer counts 2 records, the chunk holds 1"


@pytest.mark.parametrize("damage", [_cut_last_line, _cut_mid_line, _tamper, _drop_record])
def test_bad_profile_chunk_is_skipped_and_regenerated(tmp_path, capsys, damage):
    store_dir = tmp_path / "store"
    _profiles(store_dir)
    chunk = sorted(store_dir.glob("chunk-*.jsonl"))[0]
    lost = {json.loads(line)["entity"] for line in chunk.read_text().splitlines()[:-1]}
    reason = damage(chunk)
    texts, generator, store = _profiles(store_dir)
    lines = cache_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"{PREFIX}{chunk}: ") and reason in lines[0], lines
    assert "skipped" in lines[0] and store.skipped == [chunk.name]
    assert texts == EXPECTED  # the lost profiles are generated again, the same
    assert sorted(generator.prompts) == sorted(f"user {e[1:]} likes movie {e[1:]}" for e in lost)
    assert (store_dir / f"{chunk.name}.corrupt").exists() and not chunk.exists()
    texts, generator, _ = _profiles(store_dir)
    assert texts == EXPECTED and generator.prompts == [] and cache_lines(capsys) == []


def test_profile_chunk_from_before_checksums_is_accepted(tmp_path, capsys):
    store_dir = tmp_path / "store"
    _profiles(store_dir)
    for chunk in store_dir.glob("chunk-*.jsonl"):  # rewrite as the old format: plain records, no footer
        records = [json.loads(line) for line in chunk.read_text().splitlines()[:-1]]
        chunk.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "_sha256"}) + "\n"
                                 for r in records))
    texts, generator, store = _profiles(store_dir)
    assert texts == EXPECTED and generator.prompts == [] and len(store) == 4 and cache_lines(capsys) == []
