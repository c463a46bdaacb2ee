"""Does trl's GRPO with ``use_vllm`` (colocate: vLLM in the training process, the mode for one GPU) run here?

Run it with the python that has vLLM (``.venv-vllm/bin/python -m eval.probe_grpo_use_vllm``). It builds the
rehearsal's tiny stand-in (llmrank.rehearse), puts a LoRA on it and trains one GRPO step of 2 prompts x 2
generations with ``use_vllm=True, vllm_mode="colocate"``, then the same step with trl's own generation, and
prints for each: whether it ran, the wall seconds, the step's reward and loss, and the completions; where
colocate fails, the exception's type and first line and the frame it came from (the measured reason).

    PYTHONPATH=. .venv-vllm/bin/python -m eval.probe_grpo_use_vllm [--only vllm|hf]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import traceback


def _step(model_dir: str, out: str, use_vllm: bool) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    chat = [{"role": "user", "content": "Query: boiling point of water\nDocument: Water boils at 100 C.\nRelevant?"}]
    prompt = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    data = Dataset.from_list([{"prompt": prompt}, {"prompt": prompt.replace("Water", "Ice")}])
    seen: list[str] = []

    def verdict_reward(prompts, completions, **kw):  # a trl reward (keyword call): 1 for a completion with a verdict
        seen.extend(completions)
        return [1.0 if "Verdict:" in c else 0.0 for c in completions]

    args = GRPOConfig(output_dir=out, max_steps=1, per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=16, learning_rate=1e-4, logging_steps=1, save_strategy="no",
                      report_to=[], use_cpu=True, bf16=False, use_vllm=use_vllm, vllm_mode="colocate",
                      vllm_gpu_memory_utilization=0.3, vllm_max_model_length=512)
    trainer = GRPOTrainer(model=model_dir, reward_funcs=verdict_reward, args=args, train_dataset=data,
                          processing_class=tok, peft_config=LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM"))
    out_state = trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    return {"reward": logs[-1]["reward"] if logs else None, "loss": out_state.training_loss,
            "completions": seen[:2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["vllm", "hf"], default=None)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from llmrank.rehearse import stand_in_model

    model_dir = str(stand_in_model())
    try:
        import vllm

        print(f"vllm {vllm.__version__}", flush=True)
        from llmrank.backends.vllm import guard_llvmlite

        guard_llvmlite()
    except ImportError as e:
        print(f"vllm not importable: {e}")
    import trl

    print(f"trl {trl.__version__}", flush=True)
    for use_vllm in [m == "vllm" for m in ([args.only] if args.only else ["vllm", "hf"])]:
        name = "use_vllm=True (colocate)" if use_vllm else "use_vllm=False (trl's generate)"
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                r = _step(model_dir, tmp, use_vllm)
                print(f"{name}: ran in {time.perf_counter() - t0:.1f} s; reward {r['reward']}, loss {r['loss']:.4g}, "
                      f"completions {r['completions']}", flush=True)
            except BaseException as e:  # noqa: BLE001 - the failure is the measurement
                tb = traceback.extract_tb(e.__traceback__)
                where = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}" for f in tb[-4:]]
                first = (str(e).strip().splitlines() or [""])[0][:400]
                print(f"{name}: FAILED after {time.perf_counter() - t0:.1f} s: {type(e).__name__}: {first}\n  at "
                      + "\n  at ".join(where), flush=True)


if __name__ == "__main__":
    main()
