"""trl's config object of a refine method: ``GRPOConfig`` (grpo) or ``DPOConfig`` (dpo).

A recipe's ``refine.training`` is checked field by field when the recipe loads
(:func:`llmrank.recipe.recipe_problems` with :func:`llmrank.configs.check_fields`); the object itself is
built by the refine stage, where trl's own cross-field checks run (e.g. the generation batch must hold whole
groups of ``num_generations``); their message is given the section's key.
"""

from __future__ import annotations

from llmrank.errors import LlmrankError


def trainer_config_class(method: str):
    """trl's config class of a refine method."""
    if method == "grpo":
        from trl import GRPOConfig

        return GRPOConfig
    if method == "dpo":
        from trl import DPOConfig

        return DPOConfig
    raise LlmrankError(f"refine.method: unknown method '{method}' (grpo or dpo)")


def make_trainer_config(method: str, values: dict, where: str = "refine.training"):
    """trl's config object; a ``ValueError`` from trl's own checks becomes an error naming the section."""
    cls = trainer_config_class(method)
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise LlmrankError(f"{where}: trl.{cls.__name__} rejects these settings: {e}") from None
