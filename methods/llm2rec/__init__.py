"""LLM2Rec (paper 003): CSFT, MNTP and item-level contrastive stages; item embeddings for SASRec / GRU4Rec."""
