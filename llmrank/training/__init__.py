"""Refinement on top of any student kind (GRPO, DPO) and the rewards it trains on. The students themselves,
and the examples they are distilled from (:mod:`llmrank.students.examples`), live in :mod:`llmrank.students`,
the layer below."""
