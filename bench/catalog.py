"""Every method a user can type, in one place: a name, a target class and a preset of settings.

Targets are lazy 'module:attr' strings, so `bench list` and `--help` never import torch. Adding a variant
or an ablation is one line here (a preset); adding a method is a class in its paradigm's package plus one
line here. tox envs and `bench list` derive from this registry.
"""

from __future__ import annotations

from bench.registry import Registry

METHODS = Registry("method", base="bench.method:Method")
M = METHODS.register

# classic rows (methods/classic.py)
M("random", "methods.classic:RandomInit", "the backbone as is (random initialisation)")
M("seq-text", "methods.classic:SeqText", "frozen text-encoder item embeddings -> linear adapter in SASRec / GRU4Rec")
# pointwise CTR table (CoLLM / TALLRec, paper 002), backbone `none`, split `ctr_temporal`
M("mf-ctr", "methods.classic:CTRModel", "MF trained pointwise with BCE (CTR baseline)", {"model": "mf"})
M("lightgcn-ctr", "methods.classic:CTRModel", "LightGCN trained pointwise with BCE", {"model": "lightgcn"})
M("sasrec-ctr", "methods.classic:CTRModel", "SASRec (user = last position), BCE", {"model": "sasrec"})
M("din", "methods.classic:CTRModel", "DIN: target attention over the history, BCE", {"model": "din"})

# LLMInit (paper 001)
LLMINIT = "methods.llminit.method:LLMInit"
M("llminit-rand", LLMINIT, "LLMInit: random K of N text-embedding dims", {"selection": "rand"})
M("llminit-uni", LLMINIT, "LLMInit: uniform stride s=N//K dims", {"selection": "uni"})
M("llminit-var", LLMINIT, "LLMInit: top-K variance dims (popular items)", {"selection": "var"})
M("llminit-full", LLMINIT, "LLMInit: all N dims (embedding size = N)", {"selection": "full"})
M("llminit-pca", LLMINIT, "PCA to K dims (PtE's 'LLMInit' baseline)", {"selection": "pca"})
M("llminit-var-seq", "methods.llminit.method:LLMInitSeq", "LLMInit-var initialising SASRec's item table",
  {"selection": "var"})
M("llminit-pca-seq", "methods.llminit.method:LLMInitSeq",
  "PCA of item text initialising SASRec's item table (PtE's 'LLMInit' row)", {"selection": "pca"})

# LLM2Rec (paper 003) and its untrained-LLM rows
LLM2REC = "methods.llm2rec.method:LLM2Rec"
M("llm-causal", LLM2REC, "untrained decoder LLM, causal, last-token state", {"stages": []})
M("llm-bidir", LLM2REC, "untrained decoder LLM, bidirectional, mean pool",
  {"stages": [], "pooling": "bidirectional_mean"})
M("llm2rec-csft", LLM2REC, "LLM2Rec after CSFT only", {"stages": ["csft"]})
M("llm2rec-mntp", LLM2REC, "LLM2Rec after CSFT + MNTP", {"stages": ["csft", "mntp"]})
M("llm2rec", LLM2REC, "LLM2Rec: CSFT + MNTP + item-level contrastive", {"stages": ["csft", "mntp", "ic"]})

# CoLLM / TALLRec / ICL (paper 002)
COLLM = "methods.collm.method:CoLLM"
M("icl", "methods.collm.method:ICL", "the untuned LLM asked the Yes/No question (in-context)")
M("tallrec", "methods.collm.method:TALLRec", "TALLRec: LoRA on the text-only Yes/No prompt")
M("collm-mf", COLLM, "CoLLM with MF vectors mapped into ID tokens", {"cf_model": "mf"})
M("collm-lightgcn", COLLM, "CoLLM with LightGCN vectors", {"cf_model": "lightgcn"})
M("collm-sasrec", COLLM, "CoLLM with SASRec vectors (last position)", {"cf_model": "sasrec"})
M("collm-din", COLLM, "CoLLM with DIN vectors (target attention)", {"cf_model": "din"})
M("collm-uitoken", "methods.collm.method:CoLLMUIToken", "CoLLM ablation: new user/item tokens, no CF")
M("ensemble-mf-tallrec", "methods.collm.method:EnsembleMFTALLRec", "mean of MF and TALLRec P(Yes)")
M("ensemble-mf-collm", "methods.collm.method:EnsembleMFCoLLM", "mean of MF and CoLLM-MF P(Yes)")
# the same Yes/No models as rankers (issue 15): the run's backbone retrieves each user's top-N, the LLM reorders them
RERANK = "methods.collm.rerank"
M("tallrec-rerank", f"{RERANK}:TALLRecRerank", "TALLRec reordering the backbone's top-N candidates (full ranking)")
M("collm-mf-rerank", f"{RERANK}:CoLLMRerank", "CoLLM-MF reordering the backbone's top-N candidates (full ranking)")
M("icl-rerank", f"{RERANK}:ICLRerank", "the untuned LLM reordering the backbone's top-N candidates (full ranking)")

# PtE (paper 004): LLM-written user/item profiles, refined both ways, reward-selected, embedded; Table 5 rows
PTE = "methods.pte.method:PtE"
M("pte", PTE, "PtE: profiles -> rewards (collab + dist) -> embeddings (SASRec / init)")
M("pte-noprofile", PTE, "PtE ablation: no profile (raw item text embedded)",
  {"profile_users": False, "profile_items": False})
M("pte-useronly", PTE, "PtE ablation: user profiles only", {"profile_items": False})
M("pte-itemonly", PTE, "PtE ablation: item profiles only", {"profile_users": False})
M("pte-singlepass", PTE, "PtE ablation: single pass (no refinement)", {"max_rounds": 0})
M("pte-noreward", PTE, "PtE ablation: no reward selection (the first candidate kept)", {"selection": "none"})
M("pte-nogrpo", PTE, "PtE ablation (Table 5 'No GRPO'): reward selection kept, generator not GRPO-tuned",
  {"grpo_steps": 0})
M("pte-grpo", PTE, "PtE with GRPO (Eq. 12) on user groups before the user candidates are sampled (CPU: 16 steps)",
  {"grpo_steps": 16})
M("pte-grpo-items", PTE, "PtE with GRPO on user and item groups, item candidates reward-selected too (K=2; CPU: 16 steps)",
  {"grpo_steps": 16, "grpo_items": True, "item_candidates": 2})
M("pte-nodist", PTE, "PtE ablation: reward without distinctiveness", {"lambda_dist": 0.0})
M("pte-nocollab", PTE, "PtE ablation: reward without collaborative alignment", {"lambda_collab": 0.0})
M("pte-init", PTE, "PtE variant: PCA of the profile embeddings initialises the trainable SASRec item table",
  {"seq_items": "init"})


def method_families() -> dict[str, list[str]]:
    """Method family (the package under methods/) -> entry names (one tox env per family)."""
    families: dict[str, list[str]] = {}
    for name in METHODS.names():
        families.setdefault(METHODS.family(name), []).append(name)
    return families
