"""Every name a user can type, in one place: datasets, splits, backbones, methods, encoders, suites.

Targets are lazy 'module:attr' strings, so `bench list` and `--help` never import torch.
"""

from __future__ import annotations

from bench.registry import Registry

METHODS = Registry("method")
METHODS.register("random", "methods.classic:RandomInit", "the backbone as is (random initialisation)")
METHODS.register("llminit-rand", "methods.llminit:LLMInitRand", "LLMInit: random K of N text-embedding dims")
METHODS.register("llminit-uni", "methods.llminit:LLMInitUni", "LLMInit: uniform stride s=N//K dims")
METHODS.register("llminit-var", "methods.llminit:LLMInitVar", "LLMInit: top-K variance dims (popular items)")
METHODS.register("llminit-full", "methods.llminit:LLMInitFull", "LLMInit: all N dims (embedding size = N)")
METHODS.register("seq-text", "methods.sequential:SeqText",
                 "frozen text-encoder item embeddings -> linear adapter in SASRec / GRU4Rec")
METHODS.register("llm-causal", "methods.llm2rec:LLMCausal", "untrained decoder LLM, causal, last-token state")
METHODS.register("llm-bidir", "methods.llm2rec:LLMBidirectional", "untrained decoder LLM, bidirectional, mean pool")
METHODS.register("llm2rec-csft", "methods.llm2rec:LLM2RecCSFT", "LLM2Rec after CSFT only")
METHODS.register("llm2rec-mntp", "methods.llm2rec:LLM2RecMNTP", "LLM2Rec after CSFT + MNTP")
METHODS.register("llm2rec", "methods.llm2rec:LLM2Rec", "LLM2Rec: CSFT + MNTP + item-level contrastive")
METHODS.register("llminit-pca", "methods.llminit:LLMInitPCA", "PCA to K dims (PtE's 'LLMInit' baseline)")


def method_families() -> dict[str, list[str]]:
    """Method family -> method names (one tox env per family)."""
    families: dict[str, list[str]] = {}
    for name in METHODS.names():
        family = {"random": "classic", "seq-text": "classic", "llm-causal": "llm2rec",
                  "llm-bidir": "llm2rec"}.get(name, name.split("-")[0])
        families.setdefault(family, []).append(name)
    return families
