"""GRPO as a refine method: ranking rewards on the text a student generates (:mod:`llmrank.training.grpo`)."""

from __future__ import annotations

from pathlib import Path

from llmrank.training.refiners import Refiner


class GRPORefiner(Refiner):
    method = "grpo"
    description = "GRPO (trl GRPOTrainer): the student samples answers, ranking rewards score them"
    trainer_config = "GRPOConfig"
    # one step's generations on a device hold whole groups of num_generations
    training_defaults = {**Refiner.training_defaults, "num_generations": 4, "max_completion_length": 128}
    uses_rewards = True
    rows_name = "prompts"
    curves = [("reward", "mean reward")]

    @classmethod
    def unfit_reason(cls, student) -> str:
        return (f" (GRPO rewards generated text; a {student.kind} student is {student.description or 'another kind'}, "
                "and builds no prompts for it)")

    @classmethod
    def check_section(cls, section) -> list[tuple[tuple, str]]:
        """The rewards (as for any method that takes them); the weights come from ``rewards``, not
        ``training.reward_weights`` (``use_vllm: true`` needs vLLM, checked where training starts: a GPU recipe
        loads on a machine without it)."""
        problems = super().check_section(section)
        if "reward_weights" in section.training:
            problems.append((("refine", "training", "reward_weights"), "set by llmrank from each reward's 'weight' "
                             "in refine.rewards; remove it"))
        return problems

    @classmethod
    def training_args(cls, section, out: Path, seed: int, cuda: bool) -> dict:
        args = super().training_args(section, out, seed, cuda)
        if "per_device_train_batch_size" not in section.training:
            args["per_device_train_batch_size"] = args["num_generations"]
        return args

    @classmethod
    def train(cls, student, student_dir: Path, rows: list[dict], args, section, dtype: str = "float32",
              resume: str | None = None, stats: dict | None = None) -> Path:
        from llmrank.training.grpo import train_grpo

        return train_grpo(student_dir, rows, args, [x.model_dump() for x in section.rewards], section.lora, dtype,
                          resume=resume)
