"""LLMInit (paper 001): text embeddings, reduced by dimension selection or PCA, initialise CF embeddings."""
