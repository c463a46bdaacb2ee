"""A rehearsal: the whole recipe on a CPU in a minute, before its GPU-hours are spent.

``llmrank run RECIPE --rehearse`` carries out the recipe's own stages — the same teacher method and prompt,
student kind, loss, refine method and rewards, eval rows and export — with everything that costs money cut
down (:func:`rehearsal_recipe`):

- every LLM (the teacher, its fusion members, the student's base model) becomes one tiny stand-in: a 2-layer
  random Llama with the embedded SmolLM2 tokenizer and its ChatML template that answers a chat prompt with a
  short rationale and a verdict (:func:`stand_in_model`, built in-process once and cached under
  ``<cache>/models/_rehearsal``); an encoder student's base becomes a tiny random BERT with the embedded
  MiniLM tokenizer (:func:`stand_in_encoder`); the embedded bi-encoder a teacher uses stays;
- the teacher's backend stays ``vllm`` where vLLM is installed, else becomes ``hf``; an OpenAI-compatible
  endpoint becomes the stand-in on ``hf``; backend options (tensor parallelism, memory fractions) are dropped;
- the data is cut to a few training queries and a few candidates, every eval dataset (a suite's too) to a
  few queries;
- training is cut to one step of a small batch, in float32 without bf16, GRPO to 2 generations of a few
  tokens, and trl's vLLM rollouts (``use_vllm``) are switched off;
- the run is named ``<name>-REHEARSAL`` (its outputs under ``<out>/<name>-REHEARSAL/``), and its report says
  REHEARSAL at the top, so nothing it writes passes for the real run.

Every replacement is listed (:func:`rehearsal_recipe` returns the lines; the command prints them).
What a rehearsal shows: the recipe's stages fit together and run to an exported student that scores. What
it does not: quality, speed or memory at scale (``llmrank plan`` estimates those).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from llmrank.errors import LlmrankError
from llmrank.eval.report import REHEARSAL_SUFFIX
from llmrank.recipe import Recipe, eval_entries

STAND_IN = "tiny-llama-smollm2-judge"
SUFFIX = REHEARSAL_SUFFIX
QUERIES = 3
"""Training queries a rehearsal teaches (GRPO's balanced prompts need a query with a relevant candidate)."""
K = 5
EVAL_QUERIES = 2
STEPS = 1
DOC_TOKENS = 32
NEW_TOKENS = 16
GENERATE_DOCS = 8
"""Documents the generate stage writes queries for (about half survive its filters with the embedded model)."""


JUDGEMENT = "The document matches the query. Verdict: yes"
"""What the stand-in writes after any prompt that ends a line (a chat prompt's ``<|im_start|>assistant\n``): a
rationale and a verdict the rationale parser reads, so a rationale teacher's explanations, a reasoning student's
SFT examples and GRPO's format reward all have text to work on."""
CHAIN_LOGIT = 40.0


def stand_in_model(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The rehearsal's tiny LLM: a random 2-layer ``LlamaForCausalLM`` (hidden 128, 2 heads of 64, 1 kv head,
    float32) with the embedded SmolLM2 tokenizer and chat template, saved once into
    ``<models_dir>/_rehearsal/tiny-llama-smollm2-judge`` (seed 0: the same weights everywhere). Head size 64 is
    one vLLM's CPU attention supports, so the same checkpoint runs on both backends.

    A random model writes noise (often nothing at all), and a rationale teacher then has no explanation to
    teach. So the stand-in is a *bigram writer*: its token embeddings are large against what its random layers
    add (the residual stream at a position is mostly the token there), and its untied output head maps each
    token of ``"\n" + JUDGEMENT`` to the next one (then to end-of-turn) with a logit of :data:`CHAIN_LOGIT`.
    Greedy or sampled, it answers a chat prompt with :data:`JUDGEMENT` through the real generation path of
    either backend; its layers stay random and trainable, and its yes/no scores still differ by document."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llmrank import models

    target = models.models_dir(cache_dir) / "_rehearsal" / STAND_IN
    if (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(str(models.tokenizer_dir("smollm2-135m", cache_dir)))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=2048,
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    chain = tokenizer.encode("\n" + JUDGEMENT, add_special_tokens=False) + [tokenizer.eos_token_id]
    if len(set(chain[:-1])) != len(chain) - 1:
        raise LlmrankError(f"rehearsal stand-in: the tokens of {JUDGEMENT!r} repeat; a bigram writer needs each once")
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.normal_(0.0, 1.0)  # unit scale: the random layers add ~5% to the residual stream
        head = model.get_output_embeddings().weight
        for src, dst in zip(chain[:-1], chain[1:]):
            e = emb[src]
            head[dst] += CHAIN_LOGIT * e / e.dot(e)
    from llmrank.outputs import temp_dir

    tmp = temp_dir(target, sweep=True)
    try:
        models.save_model(model, tokenizer, tmp / "model")
        models._publish(tmp / "model", target, force=False)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target


ENCODER_STAND_IN = "tiny-bert-minilm"


def stand_in_encoder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The rehearsal's tiny encoder, for a cross-encoder or bi-encoder student's base: a random 2-layer
    ``BertModel`` (hidden 32, 2 heads, seed 0) with the embedded all-MiniLM-L6-v2 tokenizer, saved once as a
    sentence-transformers folder (transformer, mean pooling, normalisation — MiniLM's own layout) into
    ``<models_dir>/_rehearsal/tiny-bert-minilm``. ``SentenceTransformer(folder)`` loads it as a bi-encoder, and
    ``AutoModelForSequenceClassification`` as the encoder under a new one-logit head, as it does MiniLM."""
    import shutil

    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from llmrank import models
    from llmrank.rerankers.dense import resolve_dense_model

    target = models.models_dir(cache_dir) / "_rehearsal" / ENCODER_STAND_IN
    if (target / "modules.json").is_file() and (target / "config.json").is_file():
        return target
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:  # sentence-transformers before 6
        from sentence_transformers.models import Normalize, Pooling, Transformer
    from sentence_transformers import SentenceTransformer

    tokenizer = AutoTokenizer.from_pretrained(resolve_dense_model("minilm-l6"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    from llmrank.outputs import temp_dir

    tmp = temp_dir(target, sweep=True)
    try:
        BertModel(config).eval().save_pretrained(tmp / "hf")
        tokenizer.save_pretrained(tmp / "hf")
        st = SentenceTransformer(modules=[Transformer(str(tmp / "hf"), max_seq_length=256),
                                          Pooling(config.hidden_size, pooling_mode="mean"), Normalize()], device="cpu")
        st.save(str(tmp / "model"))
        models._publish(tmp / "model", target, force=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


ENCODER_KINDS = ("cross-encoder", "bi-encoder")
"""Student kinds whose base is an encoder (their stand-in is :func:`stand_in_encoder`)."""


def rehearsal_recipe(recipe: Recipe, stand_in: str | os.PathLike[str] | None = None,
                     encoder_stand_in: str | os.PathLike[str] | None = None) -> tuple[Recipe, list[str]]:
    """``(the recipe cut down to a CPU rehearsal, one line per replacement)``; the module docstring says what
    is cut. ``stand_in`` replaces every LLM, ``encoder_stand_in`` an encoder student's base (both built on
    first use when not given). The result is validated like any recipe."""
    model = str(stand_in if stand_in is not None else stand_in_model())
    vllm = _vllm_installed()
    raw = recipe.model_dump()
    said: list[str] = []

    def note(key: str, old, new) -> None:
        if old != new:
            said.append(f"{key}: {old!r} -> {new!r}")

    def cut(section: dict, key: str, where: str, value, smaller: bool = True) -> None:
        old = section.get(key)
        new = value if old is None or not smaller else min(old, value) if isinstance(old, (int, float)) else value
        section[key] = new
        note(f"{where}.{key}", old, new)

    raw["name"] = f"{recipe.name}{SUFFIX}"
    note("name", recipe.name, raw["name"])
    data = raw["data"]
    cut(data, "queries", "data", QUERIES)
    cut(data, "k", "data", K)

    def teacher(t: dict, where: str) -> None:
        from llmrank.rerankers import needs_backend

        if t["method"] == "fusion":
            for i, m in enumerate(t["members"]):
                teacher(m, f"{where}.members[{i}]")
            return
        if t["method"] == "oracle" or not needs_backend(t["method"]):
            return  # no LLM (the embedded bi-encoder, the judged labels)
        note(f"{where}.model", t["model"], model)
        t["model"] = model
        backend = "vllm" if t["backend"] == "vllm" and vllm else "hf"
        note(f"{where}.backend", t["backend"], backend + ("" if vllm or t["backend"] != "vllm" else
                                                         " (vLLM is not installed here)"))
        t["backend"] = backend
        opts = {"dtype": "float32"} if backend == "hf" else {"dtype": "float32", "max_model_len": 2048}
        note(f"{where}.backend_options", t["backend_options"], opts)
        t["backend_options"] = opts
        o = t["options"]
        for key, value in (("max_tokens", NEW_TOKENS), ("max_new_tokens", NEW_TOKENS), ("window", K), ("step", 2),
                           ("top_k", 3), ("passes", 1)):
            if key in o:
                cut(o, key, f"{where}.options", value)
        if "max_doc_tokens" in _options_of(t["method"]):
            cut(o, "max_doc_tokens", f"{where}.options", DOC_TOKENS)

    teacher(raw["teacher"], "teacher")
    if raw.get("distill"):
        d = raw["distill"]
        encoder = d.get("kind") in ENCODER_KINDS
        base = str(encoder_stand_in if encoder_stand_in is not None else stand_in_encoder()) if encoder else model
        note("distill.model", d["model"], base)
        d["model"] = base
        if "max_doc_tokens" in d or not encoder:
            cut(d, "max_doc_tokens", "distill", DOC_TOKENS)
        for key in ("max_seq_length", "train_max_seq_length"):
            if d.get(key):
                cut(d, key, "distill", DOC_TOKENS)
        if "group_size" in d:
            cut(d, "group_size", "distill", K)
        if "max_new_tokens" in d:
            cut(d, "max_new_tokens", "distill", NEW_TOKENS)
        if d.get("global_batch_size"):
            cut(d, "global_batch_size", "distill", 2)  # per_device_train_batch_size is cut to 2
        if d.get("dtype") != "float32":
            cut(d, "dtype", "distill", "float32", smaller=False)
        tr = d["training"]
        _cut_training(tr, "distill.training", note)
    if raw.get("refine"):
        r = raw["refine"]
        tr = r["training"]
        _cut_training(tr, "refine.training", note)
        if tr.get("use_vllm"):
            note("refine.training.use_vllm", True, "False (trl's vLLM rollouts need a GPU)")
            tr["use_vllm"] = False
            for k in [k for k in tr if k.startswith("vllm_")]:
                note(f"refine.training.{k}", tr.pop(k), "(dropped)")
        if r["method"] == "grpo":
            for key, value in (("num_generations", 2), ("max_completion_length", NEW_TOKENS)):
                cut(tr, key, "refine.training", value)
            tr["per_device_train_batch_size"] = tr["num_generations"]
        else:
            for key, value in (("max_length", 256), ("per_device_train_batch_size", 2)):
                cut(tr, key, "refine.training", value)
        o = r["options"]
        for key, value in (("queries", QUERIES), ("per_query", 2), ("pairs_per_query", 2), ("samples", 2),
                           ("max_new_tokens", NEW_TOKENS)):
            if key in o:
                cut(o, key, "refine.options", value)
    if raw.get("generate"):
        g = raw["generate"]
        # the generator stays the embedded 135M model (a random stand-in writes no query the round-trip filter
        # keeps: its queries are one repeated sentence); it writes queries for a few documents only
        cut(g, "docs", "generate", GENERATE_DOCS)
        if g.get("backend") == "vllm" and not vllm:
            note("generate.backend", "vllm", "hf (vLLM is not installed here)")
            g["backend"] = "hf"
    if raw.get("eval"):
        ev = raw["eval"]
        if ev.get("students"):  # other runs' students (paths a fresh checkout lacks): not this recipe's stages
            note("eval.students", ev["students"], "(dropped: other runs' students)")
            ev["students"] = {}
        entries = [e.model_dump() for e in eval_entries(recipe.eval)]
        if recipe.eval.suite:
            note("eval.suite", recipe.eval.suite, "(its datasets listed under eval.datasets)")
        for e in entries:
            e["queries"] = min(e["queries"] or EVAL_QUERIES, EVAL_QUERIES)
        ev["datasets"], ev["suite"] = entries, None
        said.append(f"eval.datasets: {', '.join(_label(e) for e in entries)}: {EVAL_QUERIES} queries each")
        cut(ev, "top_k", "eval", K)
        ev["dtype"] = "float32"
        ev["note"] = ("REHEARSAL: every model is a tiny random stand-in and every size is cut down; these numbers "
                      "say the stages fit together, nothing about quality, speed or memory. "
                      + (ev.get("note") or ""))
    if raw.get("export") is not None and not raw["export"].get("enabled", True):
        note("export.enabled", False, "True (a rehearsal runs the export stage too)")
        raw["export"]["enabled"] = True
    try:
        out = Recipe.model_validate(raw)
    except Exception as e:  # noqa: BLE001 - a rehearsal that cannot be built is llmrank's bug, named plainly
        raise LlmrankError(f"rehearsal of '{recipe.name}' could not be built: {e}") from None
    return out, said


def _options_of(method: str) -> set[str]:
    """The keyword options a ranking method's reranker takes."""
    import importlib
    import inspect

    from llmrank.rerankers import RERANKERS

    module, cls = RERANKERS[method][0].split(":")
    return set(inspect.signature(getattr(importlib.import_module(module), cls).__init__).parameters)


def _label(entry: dict) -> str:
    """An eval entry's report name, as :meth:`EvalDataset.label` gives it."""
    from llmrank.recipe import EvalDataset

    return EvalDataset.model_validate(entry).label()


def _cut_training(tr: dict, where: str, note) -> None:
    """A training mapping cut to one step of a small batch in float32 on a CPU, no checkpoint saved mid-run."""
    for key, value in (("max_steps", STEPS), ("gradient_accumulation_steps", 1), ("warmup_steps", 0),
                       ("logging_steps", 1), ("save_steps", 1000), ("per_device_train_batch_size", 2)):
        old = tr.get(key)
        tr[key] = value
        note(f"{where}.{key}", old, value)
    if "num_train_epochs" in tr:
        note(f"{where}.num_train_epochs", tr.pop("num_train_epochs"), "(dropped: max_steps decides)")
    for key in ("bf16", "fp16", "tf32"):
        if tr.get(key):
            note(f"{where}.{key}", tr[key], False)
            tr[key] = False
