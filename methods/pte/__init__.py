"""PtE (paper 004): LLM-written user / item profiles, refined both ways, reward-selected, then embedded."""
