"""LLM-backed judge and commentator: providers (Anthropic, OpenAI-compatible), the rubric judge,
the commentator, and the factory that picks them from settings."""
