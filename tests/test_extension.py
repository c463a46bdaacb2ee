"""Extension without edits: a student kind, a refine method, a ranking method, a loss and a reward, all defined
HERE (outside the package) and registered through llmrank's public ``register_`` functions, run together by
``llmrank run`` on a tiny recipe. No file under ``llmrank/`` knows any of them.

- ranking method ``toy_overlap``: scores a document by the query words it contains (no LLM backend); the
  teacher of the recipe.
- loss ``toy_hinge``: a pairwise hinge on the teacher's order; the distillation loss.
- student kind ``toy``: the pointwise yes/no scorer with one more field (``answer_bias``) and its own refine
  data (one prompt per teacher-best and teacher-worst document).
- reward ``toy_agree``: 1 when an answer ("yes"/"no") agrees with the row's label, plus a bonus.
- refine method ``toy_sft``: of the two answers, trains the student (a new LoRA, saved like a refined
  student) on the one the rewards prefer, with plain ``transformers.Trainer``.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmrank.errors import LlmrankError
from llmrank.rerankers.base import Reranker, ranking_from_scores
from llmrank.students.base import build_config_class
from llmrank.students.pointwise import PointwiseFields, PointwiseStudent
from llmrank.training.refiners import Refiner

# -- a ranking method ------------------------------------------------------------------------------------


class ToyOverlapReranker(Reranker):
    """Query-word overlap: ``sum(word in doc) + title_weight * sum(word in title)``."""

    method = "toy_overlap"
    uses_backend = False

    def __init__(self, backend=None, prompt=None, title_weight: float = 1.0):
        self.title_weight = title_weight

    @property
    def cache_key(self) -> dict:
        return {"method": self.method, "title_weight": self.title_weight}

    def rerank(self, query, docs):
        words = set(query.text.lower().split())
        scores = [sum(w in d.text.lower().split() for w in words) + self.title_weight *
                  sum(w in (d.title or "").lower().split() for w in words) for d in docs]
        return ranking_from_scores(docs, scores)


# -- a loss ----------------------------------------------------------------------------------------------


class ToyHingeLoss:
    """Mean over (i above j in the teacher's order) of ``max(0, margin - (s_i - s_j))``."""

    calls = 0

    def __init__(self, margin: float = 1.0):
        self.margin = margin

    def __call__(self, student_scores, teacher_scores=None, teacher_ranks=None, labels=None, mask=None):
        import torch

        ToyHingeLoss.calls += 1
        t = teacher_scores.masked_fill(~mask, float("-inf"))
        above = (t.unsqueeze(-1) > t.unsqueeze(-2)) & mask.unsqueeze(-1) & mask.unsqueeze(-2)
        diff = student_scores.unsqueeze(-1) - student_scores.unsqueeze(-2)
        hinge = torch.clamp(self.margin - diff, min=0)[above]
        return hinge.mean() if hinge.numel() else student_scores.sum() * 0


# -- a reward --------------------------------------------------------------------------------------------


def toy_agree(prompts, completions, label=None, bonus: float = 0.0, **columns):
    """1 + bonus when the answer agrees with the label (> 0 is "yes"), else 0."""
    out = []
    for text, lab in zip(completions, label):
        out.append((1.0 + bonus) if (text.strip() == "yes") == (lab > 0) else 0.0)
    return out


# -- a student kind --------------------------------------------------------------------------------------


@dataclass
class ToyFields(PointwiseFields):
    answer_bias: float = field(default=0.0, metadata={"help": "a toy field: recorded in the student's metadata", "ge": 0})


@dataclass
class ToySFTOptions:
    per_query: int = field(default=2, metadata={"help": "rows per query: the teacher's best and worst", "ge": 2, "le": 2})


class ToyStudent(PointwiseStudent):
    kind = "toy"
    fields = ToyFields
    description = "the pointwise scorer with a toy field (registered by a test)"
    refine_options = {"toy_sft": ToySFTOptions}

    @classmethod
    def config_class(cls):
        from transformers import TrainingArguments

        return build_config_class(ToyFields, TrainingArguments, "ToyStudentConfig", __name__, "toy config")

    @classmethod
    def refine_rows(cls, method, student_dir, data, teacher_records, options, *, out, dtype="float32", seed=0,
                    progress=False):
        from transformers import AutoTokenizer

        from llmrank.prompts import load_prompt
        from llmrank.rerankers.pointwise import build_pointwise_prompt
        from llmrank.training.refined import student_meta

        assert method == "toy_sft"
        folder, meta = student_meta(student_dir)
        tok = AutoTokenizer.from_pretrained(folder)
        prompt = load_prompt(meta["prompt"])
        rows = []
        for qid, rec in teacher_records.items():
            for docid, label in ((rec["ranking"][0], 1.0), (rec["ranking"][-1], 0.0)):
                text, _ = build_pointwise_prompt(prompt, tok, data.queries[qid].text, data.docs[docid].contents,
                                                 meta["max_doc_tokens"])
                rows.append({"prompt": text, "label": label, "qid": qid, "docid": docid})
        return rows, {"rows": len(rows)}


# -- a refine method -------------------------------------------------------------------------------------


class ToySFTRefiner(Refiner):
    method = "toy_sft"
    description = "next-token SFT on the answer the rewards prefer (a test's refiner)"
    trainer_config = "TrainingArguments"
    uses_rewards = True
    rows_name = "rows"

    @classmethod
    def train(cls, student, student_dir, rows, args, section, dtype="float32", resume=None, stats=None):
        import datasets
        import torch
        from peft import get_peft_model
        from transformers import Trainer

        from llmrank.training.refined import lora_config, save_refined, start_model
        from llmrank.training.rewards import build_rewards

        funcs, weights = build_rewards([r.model_dump() for r in section.rewards])
        out = Path(args.output_dir)
        model, tok, meta, base_path = start_model(student_dir, out, dtype)
        model = get_peft_model(model, lora_config(section.lora))
        examples = []
        for r in rows:  # the answer with the larger weighted reward is the target
            totals = {a: sum(w * f([r["prompt"]], [a], label=[r["label"]])[0] for f, w in zip(funcs, weights))
                      for a in ("yes", "no")}
            answer = max(totals, key=totals.get)
            p = tok.encode(r["prompt"], add_special_tokens=False)
            a = tok.encode(answer, add_special_tokens=False)
            examples.append({"input_ids": p + a, "labels": [-100] * len(p) + a})

        def collate(batch):
            width = max(len(b["input_ids"]) for b in batch)
            pad = tok.pad_token_id
            return {"input_ids": torch.tensor([[pad] * (width - len(b["input_ids"])) + b["input_ids"] for b in batch]),
                    "labels": torch.tensor([[-100] * (width - len(b["labels"])) + b["labels"] for b in batch]),
                    "attention_mask": torch.tensor([[0] * (width - len(b["input_ids"])) + [1] * len(b["input_ids"])
                                                    for b in batch])}

        args.remove_unused_columns = False
        trainer = Trainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(examples),
                          data_collator=collate)
        trainer.train(resume_from_checkpoint=resume)
        save_refined(trainer, tok, meta, base_path, out, cls.method, {"rows": len(rows)}, ("loss",))
        return out


# -- the run ---------------------------------------------------------------------------------------------


@pytest.fixture
def registered():
    """Register the five toys, and take them out again afterwards (the registries are process-wide)."""
    from llmrank import losses
    from llmrank.rerankers import RERANKERS, register_reranker
    from llmrank.students import STUDENT_KINDS, register_student
    from llmrank.training.refiners import REFINERS, register_refiner
    from llmrank.training.rewards import REWARDS, register_reward

    register_reranker("toy_overlap", ToyOverlapReranker)
    losses.register_loss("toy_hinge", ToyHingeLoss)
    register_student(ToyStudent)
    register_refiner(ToySFTRefiner)
    register_reward("toy_agree", toy_agree)
    yield
    RERANKERS.pop("toy_overlap")
    losses._REGISTRY.pop("toy_hinge")
    losses.LOSS_NAMES = tuple(losses._REGISTRY)
    STUDENT_KINDS.pop("toy")
    REFINERS.pop("toy_sft")
    REWARDS.pop("toy_agree")


def _recipe(path: Path, beir: Path, model: Path, **edits) -> Path:
    text = textwrap.dedent(f"""\
        name: ext
        seed: 0
        data: {{dataset: {beir}, k: 4, queries: 4}}
        teacher:
          method: toy_overlap
          options: {{title_weight: 2.0}}
        distill:
          kind: toy
          model: {model}
          loss: toy_hinge
          loss_options: {{margin: 0.5}}
          answer_bias: 0.25
          group_size: 4
          max_doc_tokens: 32
          lora: {{r: 4, alpha: 8, dropout: 0.0}}
          training: {{max_steps: 2, logging_steps: 1, save_steps: 2, learning_rate: 1e-3}}
        refine:
          method: toy_sft
          rewards: [{{name: toy_agree, weight: 1.0, options: {{bonus: 0.5}}}}]
          options: {{per_query: 2}}
          lora: {{r: 4, alpha: 8, dropout: 0.0}}
          training: {{max_steps: 2, logging_steps: 1, save_steps: 2, learning_rate: 1e-3, report_to: []}}
        eval:
          datasets: [{{dataset: {beir}, split: test, name: t, queries: 2}}]
          top_k: 4
        """)
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    path.write_text(text)
    return path


def test_toy_plugins_are_checked_at_load_like_built_in_ones(registered, tmp_path, tiny_model_dir):
    """Each toy's own options are checked at load with the key path and "did you mean", as for built-ins."""
    from test_recipe import write_tiny_beir

    from llmrank.recipe import load_recipe

    beir = write_tiny_beir(tmp_path / "beir")
    model = Path(tiny_model_dir)
    assert load_recipe(_recipe(tmp_path / "ok.yaml", beir, model)).distill.answer_bias == 0.25
    cases = [({"title_weight: 2.0": "title_wieght: 2.0"}, ["key 'teacher.options.title_wieght'", "did you mean 'title_weight'"]),
             ({"margin: 0.5": "marign: 0.5"}, ["key 'distill.loss_options.marign'", "did you mean 'margin'"]),
             ({"answer_bias: 0.25": "answer_bias: -1"}, ["key 'distill.answer_bias'", "greater than or equal to 0"]),
             ({"bonus: 0.5": "bonsu: 0.5"}, ["key 'refine.rewards[0]'", "did you mean 'bonus'"]),
             ({"per_query: 2}": "per_query: 3}"}, ["key 'refine.options.per_query'", "less than or equal to 2"]),
             ({"method: toy_sft": "method: toy_sfd"}, ["key 'refine.method'", "did you mean 'toy_sft'"]),
             ({"kind: toy": "kind: tyo"}, ["key 'distill.kind'", "did you mean 'toy'"])]
    for edits, expected in cases:
        path = _recipe(tmp_path / "bad.yaml", beir, model, **edits)
        with pytest.raises(LlmrankError) as info:
            load_recipe(path)
        for part in expected:
            assert part in str(info.value), (part, str(info.value))


def test_llmrank_run_with_a_toy_of_each_kind(registered, tmp_path, tiny_model_dir, monkeypatch):
    from test_recipe import _run_cli, write_tiny_beir

    monkeypatch.setenv("LLMRANK_CACHE", str(tmp_path / "cache"))
    beir = write_tiny_beir(tmp_path / "beir")
    recipe = _recipe(tmp_path / "ext.yaml", beir, Path(tiny_model_dir))
    ToyHingeLoss.calls = 0
    rc, stdout, stderr = _run_cli(["run", str(recipe), "--out", str(tmp_path / "runs")])
    assert rc == 0, stderr[-3000:]
    root = tmp_path / "runs" / "ext"
    # the teacher is the toy method: its records say so and its order is the word-overlap order
    recs = [json.loads(line) for line in (root / "teach" / "teacher.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and all(r["reranker"]["method"] == "toy_overlap" for r in recs)
    # the student was trained with the toy loss (one call per step) and saved as a toy student
    assert ToyHingeLoss.calls >= 2
    meta = json.loads((root / "distill" / "merged" / "llmrank_student.json").read_text())
    assert meta["kind"] == "toy" and meta["config"]["answer_bias"] == 0.25
    # refined by the toy method on the toy student's rows, with the toy reward choosing the answers
    refined = json.loads((root / "refine" / "merged" / "llmrank_student.json").read_text())
    assert refined["kind"] == "toy" and refined["refined"]["method"] == "toy_sft" and refined["refined"]["rows"] == 8
    manifest = json.loads((root / "refine" / "manifest.json").read_text())
    assert manifest["inputs"]["rows"] == 8
    # the refined LoRA moved the weights
    from safetensors.torch import load_file

    a = load_file(root / "distill" / "merged" / "model.safetensors")
    b = load_file(root / "refine" / "merged" / "model.safetensors")
    assert any(not (a[k] == b[k]).all() for k in a if k in b)
    # every eval row ran, the toy teacher and both toy students included
    results = json.loads((root / "eval" / "results.json").read_text())
    assert set(results["t"]) == {"first_stage", "teacher", "student_before", "student", "student_refined"}
    assert all(0 <= row["metrics"]["ndcg@10"] <= 1 for row in results["t"].values())
