"""Trainers: ``distill`` (pointwise student on ranking losses), ``sft`` (reasoning student), ``grpo``, ``dpo``."""
