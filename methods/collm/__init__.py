"""CoLLM / TALLRec / ICL (paper 002): a LoRA-tuned LLM answers Yes/No; CF vectors mapped into its tokens."""
