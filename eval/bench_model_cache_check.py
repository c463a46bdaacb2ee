"""What the prepared-model cache's checksum check costs, next to loading the model it guards.

The cache records each file's size, mtime and sha256 (llmrank.models.prepare_model). On every use,
``is_prepared`` compares sizes and mtimes (a stat per file); only a file whose mtime moved is hashed again.
This prints, measured in one process on the prepared SmolLM2-135M checkpoint:

- the stat-only check (the path taken on every load of an untouched cache),
- a full sha256 of the weights (the path taken once after a file's mtime moved),
- loading the model with transformers (what each check is in front of),

and the ratios of the first two to the third.

    python -m eval.bench_model_cache_check
"""

from __future__ import annotations

import time

from llmrank.models import file_sha256, is_prepared, prepare_model


def main() -> None:
    from transformers import AutoModelForCausalLM

    path = prepare_model("smollm2-135m")
    weights = path / "model.safetensors"
    t0 = time.perf_counter()
    for _ in range(100):
        is_prepared(path)
    check = (time.perf_counter() - t0) / 100
    t0 = time.perf_counter()
    file_sha256(weights)
    full = time.perf_counter() - t0
    t0 = time.perf_counter()
    AutoModelForCausalLM.from_pretrained(path)
    load = time.perf_counter() - t0
    mb = weights.stat().st_size / 2**20
    print(f"{path}: weights {mb:.0f} MiB")
    print(f"is_prepared (sizes + mtimes): {check * 1e3:.2f} ms = {check / load:.5f} x a model load")
    print(f"full sha256 of the weights:   {full:.2f} s = {full / load:.2f} x a model load ({mb / full:.0f} MiB/s)")
    print(f"model load (from_pretrained): {load:.2f} s")


if __name__ == "__main__":
    main()
