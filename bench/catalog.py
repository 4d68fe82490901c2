"""Every name a user can type, in one place: datasets, splits, backbones, methods, encoders, suites.

Targets are lazy 'module:attr' strings, so `bench list` and `--help` never import torch.
"""

from __future__ import annotations

from bench.registry import Registry

METHODS = Registry("method")
METHODS.register("random", "methods.classic:RandomInit", "the backbone as is (random initialisation)")
METHODS.register("llminit-rand", "methods.llminit.method:LLMInitRand", "LLMInit: random K of N text-embedding dims")
METHODS.register("llminit-uni", "methods.llminit.method:LLMInitUni", "LLMInit: uniform stride s=N//K dims")
METHODS.register("llminit-var", "methods.llminit.method:LLMInitVar", "LLMInit: top-K variance dims (popular items)")
METHODS.register("llminit-full", "methods.llminit.method:LLMInitFull", "LLMInit: all N dims (embedding size = N)")
METHODS.register("seq-text", "methods.classic:SeqText",
                 "frozen text-encoder item embeddings -> linear adapter in SASRec / GRU4Rec")
METHODS.register("llm-causal", "methods.llm2rec.method:LLMCausal", "untrained decoder LLM, causal, last-token state")
METHODS.register("llm-bidir", "methods.llm2rec.method:LLMBidirectional", "untrained decoder LLM, bidirectional, mean pool")
METHODS.register("llm2rec-csft", "methods.llm2rec.method:LLM2RecCSFT", "LLM2Rec after CSFT only")
METHODS.register("llm2rec-mntp", "methods.llm2rec.method:LLM2RecMNTP", "LLM2Rec after CSFT + MNTP")
METHODS.register("llm2rec", "methods.llm2rec.method:LLM2Rec", "LLM2Rec: CSFT + MNTP + item-level contrastive")
METHODS.register("llminit-pca", "methods.llminit.method:LLMInitPCA", "PCA to K dims (PtE's 'LLMInit' baseline)")
# pointwise CTR table (CoLLM / TALLRec, paper 002), backbone `none`, split `ctr_temporal`
METHODS.register("mf-ctr", "methods.classic:MFCTR", "MF trained pointwise with BCE (CTR baseline)")
METHODS.register("lightgcn-ctr", "methods.classic:LightGCNCTR", "LightGCN trained pointwise with BCE")
METHODS.register("sasrec-ctr", "methods.classic:SASRecCTR", "SASRec (user = last position), BCE")
METHODS.register("din", "methods.classic:DINCTR", "DIN: target attention over the history, BCE")
METHODS.register("icl", "methods.collm.method:ICL", "the untuned LLM asked the Yes/No question (in-context)")
METHODS.register("tallrec", "methods.collm.method:TALLRec", "TALLRec: LoRA on the text-only Yes/No prompt")
METHODS.register("collm-mf", "methods.collm.method:CoLLMMF", "CoLLM with MF vectors mapped into ID tokens")
METHODS.register("collm-lightgcn", "methods.collm.method:CoLLMLightGCN", "CoLLM with LightGCN vectors")
METHODS.register("collm-sasrec", "methods.collm.method:CoLLMSASRec", "CoLLM with SASRec vectors (last position)")
METHODS.register("collm-din", "methods.collm.method:CoLLMDIN", "CoLLM with DIN vectors (target attention)")
METHODS.register("collm-uitoken", "methods.collm.method:CoLLMUIToken", "CoLLM ablation: new user/item tokens, no CF")
METHODS.register("ensemble-mf-tallrec", "methods.collm.method:EnsembleMFTALLRec", "mean of MF and TALLRec P(Yes)")
METHODS.register("ensemble-mf-collm", "methods.collm.method:EnsembleMFCoLLM", "mean of MF and CoLLM-MF P(Yes)")
# PtE (paper 004): LLM-written user/item profiles, refined both ways, reward-selected, embedded; Table 5 rows
METHODS.register("llminit-var-seq", "methods.llminit.method:LLMInitVarSeq", "LLMInit-var initialising SASRec's item table")
METHODS.register("llminit-pca-seq", "methods.llminit.method:LLMInitPCASeq",
                 "PCA of item text initialising SASRec's item table (PtE's 'LLMInit' row)")
METHODS.register("pte", "methods.pte.method:PtE", "PtE: profiles -> rewards (collab + dist) -> embeddings (SASRec / init)")
METHODS.register("pte-noprofile", "methods.pte.method:PtENoProfile", "PtE ablation: no profile (raw item text embedded)")
METHODS.register("pte-useronly", "methods.pte.method:PtEUserOnly", "PtE ablation: user profiles only")
METHODS.register("pte-itemonly", "methods.pte.method:PtEItemOnly", "PtE ablation: item profiles only")
METHODS.register("pte-singlepass", "methods.pte.method:PtESinglePass", "PtE ablation: single pass (no refinement)")
METHODS.register("pte-noreward", "methods.pte.method:PtENoReward", "PtE ablation: no reward selection (No GRPO)")
METHODS.register("pte-nodist", "methods.pte.method:PtENoDist", "PtE ablation: reward without distinctiveness")
METHODS.register("pte-nocollab", "methods.pte.method:PtENoCollab", "PtE ablation: reward without collaborative alignment")
METHODS.register("pte-init", "methods.pte.method:PtEInit",
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
