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
# pointwise CTR table (CoLLM / TALLRec, paper 002), backbone `none`, split `ctr_temporal`
METHODS.register("mf-ctr", "methods.ctr_backbones:MFCTR", "MF trained pointwise with BCE (CTR baseline)")
METHODS.register("lightgcn-ctr", "methods.ctr_backbones:LightGCNCTR", "LightGCN trained pointwise with BCE")
METHODS.register("sasrec-ctr", "methods.ctr_backbones:SASRecCTR", "SASRec (user = last position), BCE")
METHODS.register("din", "methods.ctr_backbones:DINCTR", "DIN: target attention over the history, BCE")
METHODS.register("icl", "methods.collm:ICL", "the untuned LLM asked the Yes/No question (in-context)")
METHODS.register("tallrec", "methods.collm:TALLRec", "TALLRec: LoRA on the text-only Yes/No prompt")
METHODS.register("collm-mf", "methods.collm:CoLLMMF", "CoLLM with MF vectors mapped into ID tokens")
METHODS.register("collm-lightgcn", "methods.collm:CoLLMLightGCN", "CoLLM with LightGCN vectors")
METHODS.register("collm-sasrec", "methods.collm:CoLLMSASRec", "CoLLM with SASRec vectors (last position)")
METHODS.register("collm-din", "methods.collm:CoLLMDIN", "CoLLM with DIN vectors (target attention)")
METHODS.register("collm-uitoken", "methods.collm:CoLLMUIToken", "CoLLM ablation: new user/item tokens, no CF")
METHODS.register("ensemble-mf-tallrec", "methods.collm:EnsembleMFTALLRec", "mean of MF and TALLRec P(Yes)")
METHODS.register("ensemble-mf-collm", "methods.collm:EnsembleMFCoLLM", "mean of MF and CoLLM-MF P(Yes)")
# PtE (paper 004): LLM-written user/item profiles, refined both ways, reward-selected, embedded; Table 5 rows
METHODS.register("llminit-var-seq", "methods.llminit:LLMInitVarSeq", "LLMInit-var initialising SASRec's item table")
METHODS.register("llminit-pca-seq", "methods.llminit:LLMInitPCASeq",
                 "PCA of item text initialising SASRec's item table (PtE's 'LLMInit' row)")
METHODS.register("pte", "methods.pte:PtE", "PtE: profiles -> rewards (collab + dist) -> embeddings (SASRec / init)")
METHODS.register("pte-noprofile", "methods.pte:PtENoProfile", "PtE ablation: no profile (raw item text embedded)")
METHODS.register("pte-useronly", "methods.pte:PtEUserOnly", "PtE ablation: user profiles only")
METHODS.register("pte-itemonly", "methods.pte:PtEItemOnly", "PtE ablation: item profiles only")
METHODS.register("pte-singlepass", "methods.pte:PtESinglePass", "PtE ablation: single pass (no refinement)")
METHODS.register("pte-noreward", "methods.pte:PtENoReward", "PtE ablation: no reward selection (No GRPO)")
METHODS.register("pte-nodist", "methods.pte:PtENoDist", "PtE ablation: reward without distinctiveness")
METHODS.register("pte-nocollab", "methods.pte:PtENoCollab", "PtE ablation: reward without collaborative alignment")
METHODS.register("pte-init", "methods.pte:PtEInit",
                 "PtE variant: PCA of the profile embeddings initialises the trainable SASRec item table")


def method_families() -> dict[str, list[str]]:
    """Method family -> method names (one tox env per family)."""
    families: dict[str, list[str]] = {}
    for name in METHODS.names():
        family = {"random": "classic", "seq-text": "classic", "llm-causal": "llm2rec",
                  "llm-bidir": "llm2rec", "mf-ctr": "collm", "lightgcn-ctr": "collm", "sasrec-ctr": "collm",
                  "din": "collm", "icl": "tallrec", "ensemble-mf-tallrec": "tallrec",
                  "ensemble-mf-collm": "collm"}.get(name, name.split("-")[0])
        families.setdefault(family, []).append(name)
    return families
