"""Every registered method entry honours the method contract (tests/contract.py) on tiny synthetic data:
settings round-trip and preset, fit + score shape and finiteness, no seen item ranked (ranking) or sane
AUC / P(Yes) (pointwise), same seed same scores, parameter counts. A newly registered entry is covered
without touching this file. `-m gpu` runs one entry per paradigm on CUDA (skipped without a GPU)."""

from __future__ import annotations

import pytest

from bench.catalog import METHODS
from tests.contract import MethodContract, choose_backbone

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")


class TestEveryEntry(MethodContract):
    """Every registered entry, each on the cheapest backbone it runs on (pointwise: none), on the CPU."""

    device = "cpu"
    # PtE's own paths (the user-profile term, seq_items "init") exist on SASRec only; its ablations run on MF
    backbone_overrides = {"pte": "sasrec", "pte-init": "sasrec"}


# one entry per paradigm: a RecBole backbone as is, LLMInit, text item tables, LLM2Rec, TALLRec, CoLLM, PtE
GPU_ENTRIES = ("random", "llminit-var", "seq-text", "llm2rec", "tallrec", "collm-mf", "pte")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
class TestParadigmsOnGPU(MethodContract):
    """The same contract with device="cuda" (scripts/gpu_smoke.sh runs it on a GPU machine)."""

    device = "cuda"
    entries = GPU_ENTRIES
    backbone_overrides = {"pte": "sasrec"}


def test_every_entry_is_covered_on_a_backbone_it_runs_on():
    cases = {c.name: c for c in TestEveryEntry.cases()}
    assert sorted(cases) == METHODS.names()
    for name, case in cases.items():
        cls = METHODS.get(name)
        assert case.backbone in tuple(cls.backbones)
        if case.protocol == "pointwise":
            assert case.backbone == "none"
    assert set(GPU_ENTRIES) <= set(cases)
    assert choose_backbone(METHODS.get("random")) == "mf"
