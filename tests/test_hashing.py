"""bench.hashing's helpers give the very bytes of the formulas the caches and seeds were first keyed with (the
local helpers they replaced): no cache key, profile key, sampled user or negative moves."""

from __future__ import annotations

import hashlib
import json

import pytest

from bench.hashing import derive_seed, json_hash, sha256_hex

OBJECTS = [{"b": [1, 2.5, "é"], "a": {"z": None, "y": True}}, [["1", "2"], ["Café", "naïve 😀"]], {"k": "ü", "n": 3}]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("obj", OBJECTS)
def test_json_hash_reproduces_each_former_formula(obj):
    assert json_hash(obj) == _sha(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str))  # run ids
    # encoder fingerprints, embedding and split keys, CoLLM adapters, pointwise CF caches
    assert json_hash(obj, compact=False) == _sha(json.dumps(obj, sort_keys=True))
    assert json_hash(obj, 12, compact=False) == _sha(json.dumps(obj, sort_keys=True))[:12]
    # LLM2Rec stage keys and data hashes, PtE record checksums
    assert json_hash(obj, 16, ensure_ascii=False) == _sha(json.dumps(obj, sort_keys=True, separators=(",", ":"),
                                                                     ensure_ascii=False))[:16]
    # PtE profile request keys
    assert json_hash(obj, compact=False, ensure_ascii=False) == _sha(json.dumps(obj, sort_keys=True, ensure_ascii=False))


def test_text_hashes_and_derived_seeds():
    assert sha256_hex("naïve", 16) == _sha("naïve")[:16] and sha256_hex(b"\x00\xff") == hashlib.sha256(b"\x00\xff").hexdigest()
    for parts in [(0, "item-users", "12"), (7, "user", "u1", 3), ("abc", "test-users", 100), (0, "negatives", "42")]:
        assert derive_seed(*parts) == int(_sha("|".join(str(p) for p in parts))[:8], 16)
