"""Math LLM: tiny decoder-only transformers that learn arithmetic, and the tools to measure how well."""
