"""The tiny random models the unit tests run on: :mod:`eval.tiny_models` (shared with the reliability audit)."""

from eval.tiny_models import build_tiny_bert, build_tiny_llama  # noqa: F401
