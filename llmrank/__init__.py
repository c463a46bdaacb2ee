"""llmrank: turn an expensive LLM ranker into a cheap one (teach, distill, refine, evaluate, serve)."""

__version__ = "0.1.0"
