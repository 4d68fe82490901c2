"""What every LLM-based method shares: one loader (`load`), one LoRA helper (`lora`), one training loop on
`accelerate` (`train`) and one chat-generation interface (`generate`). CoLLM / TALLRec, LLM2Rec and PtE
build on these instead of keeping their own copies."""
