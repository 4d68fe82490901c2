"""LLM-for-recommendation benchmarking harness: one data pipeline, one split, one set of metrics for every method."""

__version__ = "0.1.0"
SCHEMA_VERSION = 2  # 2: versioned run identities (record.identity), run options in provenance
