"""The reasoning student (llmrank.students.reasoning): SFT examples from teacher rationales, trl SFT with LoRA and
assistant-only loss, save/load, and the reranker that scores the verdict token."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from llmrank.backends.base import Backend, Generation
from llmrank.data.types import Doc, Query, RankingData
from llmrank.errors import LlmrankError
from llmrank.prompts import load_prompt, render_chat
from llmrank.rerankers.rationale import build_rationale_messages, build_rationale_prompt
from llmrank.students.reasoning import (
    OUTPUT_FORMAT,
    ReasoningStudentReranker,
    build_sft_examples,
    build_sft_trainer,
    sft_sequence,
    sft_texts,
    teacher_verdicts,
    verdict_prefix,
)

DOCS = {d.docid: d for d in [
    Doc("d0", "Water boils at 100 degrees Celsius at sea level."),
    Doc("d1", "The Eiffel Tower is in Paris."),
    Doc("d2", "Boiling point depends on pressure.", title="Boiling"),
    Doc("d3", "Cats sleep most of the day."),
]}
QUERIES = {"q1": Query("q1", "boiling point of water"), "q2": Query("q2", "where is the eiffel tower")}
DATA = RankingData("toy", QUERIES, DOCS, source="toy")


def rationale_record(qid="q1", ranking=("d0", "d2", "d1", "d3"), verdicts=None, rationales=None, prompt="rationale@1"):
    rec = {"qid": qid, "key": f"k-{qid}", "method": "rationale", "prompt": prompt, "ranking": list(ranking),
           "scores": None, "query": QUERIES[qid].text}
    if rationales is not None:
        rec["rationales"] = rationales
    if verdicts is not None:
        rec["extra"] = {"verdicts": verdicts}
    return rec


# -- tiny model ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dir(tiny_model_dir) -> Path:
    """The shared tiny random Llama (tests/conftest.py) with the SmolLM2 tokenizer and its ChatML template."""
    return Path(tiny_model_dir)


@pytest.fixture(scope="module")
def tiny_tok(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


def sft_args(out: Path, **kw):
    """A ReasoningStudentConfig: trl's SFTConfig fields and the student's together."""
    from llmrank.students.reasoning import ReasoningStudent

    base = dict(output_dir=str(out), max_steps=15, per_device_train_batch_size=2, learning_rate=1e-2,
                lr_scheduler_type="constant", warmup_steps=0, logging_steps=1, save_strategy="no", report_to=[],
                bf16=False, gradient_checkpointing=False, use_cpu=True, seed=0, disable_tqdm=True,
                train_sampling_strategy="sequential", dataloader_num_workers=0)
    base.update(kw)
    return ReasoningStudent.config_class()(**base)


# -- verdict parsing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, head, wrote", [
    ("It says 100 C.\nVerdict: yes", "It says 100 C.\nVerdict:", True),
    ("Off topic.\nverdict:no", "Off topic.\nverdict:", True),
    ("**Verdict:** Yes.", "**Verdict:", True),
    ("Verdict: no. Wait.\nVerdict: yes", "Verdict: no. Wait.\nVerdict:", True),  # the last one counts
    ("Verdict :   yes", "Verdict :", True),
    ("Talks about Paris.", "Talks about Paris.\nVerdict:", False),  # none written: forced
    ("  \n", "Verdict:", False),
    ("", "Verdict:", False),
    ("It mentions the verdict of a court.", "It mentions the verdict of a court.\nVerdict:", False),
])
def test_verdict_prefix(text, head, wrote):
    assert verdict_prefix(text) == (head, wrote)


def test_teacher_verdict_rule():
    rec = rationale_record(verdicts={"d0": 1.0, "d1": 0.0, "d2": None})
    assert teacher_verdicts(rec) == {"d0": True, "d1": False, "d2": None}
    graded = rationale_record(verdicts={"d0": 3.0, "d1": 1.0, "d2": 2.0, "d3": 0.0}, prompt="rationale_graded@1")
    assert teacher_verdicts(graded) == {"d0": True, "d1": False, "d2": True, "d3": False}
    assert teacher_verdicts(graded, min_grade=3) == {"d0": True, "d1": False, "d2": False, "d3": False}
    # an unknown prompt: grades are recognised by a value above 1
    assert teacher_verdicts(rationale_record(verdicts={"d0": 2.0, "d1": 1.0}, prompt="mine@1")) == {"d0": True, "d1": False}
    # an order only: the top_m best are yes
    order = rationale_record(ranking=("d2", "d0", "d1", "d3"))
    assert teacher_verdicts(order, top_m=2) == {"d2": True, "d0": True, "d1": False, "d3": False}


# -- examples -----------------------------------------------------------------------------------------

def test_build_sft_examples_format_and_rule(caplog):
    prompt = load_prompt("rationale")
    recs = {
        "q1": rationale_record(verdicts={"d0": 1.0, "d1": 0.0, "d2": None, "d3": 0.0},
                               rationales={"d0": "States 100 C.", "d1": "About Paris.", "d2": "unparsed text", "d3": "  "}),
        "q2": rationale_record("q2", ranking=("d1", "d0"), rationales={"d0": "About water.", "d1": "Names Paris."}),
        "q3": {"qid": "q3", "key": "k3", "ranking": ["d0", "d1"], "scores": None},  # no rationales: ignored
    }
    examples = build_sft_examples(DATA, recs, top_m=1)
    assert [(e["qid"], e["docid"], e["verdict"]) for e in examples] == [
        ("q1", "d0", "yes"), ("q1", "d1", "no"), ("q2", "d1", "yes"), ("q2", "d0", "no")]
    first = examples[0]
    assert first["prompt"] == prompt.key
    msgs = first["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[:-1] == build_rationale_messages(prompt, None, QUERIES["q1"].text, DOCS["d0"].contents)[0]
    assert msgs[-1]["content"] == "States 100 C.\nVerdict: yes" == OUTPUT_FORMAT.format(explanation="States 100 C.", verdict="yes")
    assert examples[3]["messages"][-1]["content"] == "About water.\nVerdict: no"

    with pytest.raises(LlmrankError, match="no SFT examples"):
        build_sft_examples(DATA, [recs["q3"]])
    with pytest.raises(LlmrankError, match="asks for a grade"):
        build_sft_examples(DATA, recs, prompt="rationale_graded")
    with pytest.raises(LlmrankError, match="not in toy"):
        build_sft_examples(DATA, [rationale_record(ranking=("zz",), rationales={"zz": "x"})])


def test_examples_use_the_rerankers_prompt(tiny_tok):
    """The user turn, rendered, is byte for byte the RationaleReranker's input (document truncation included)."""
    from llmrank.rerankers.rationale import RationaleReranker

    class TokOnly(Backend):
        def label_logprobs(self, prompts, labels, variants=True):
            raise NotImplementedError

        def generate(self, prompts, params=None):
            raise NotImplementedError

    backend = TokOnly("tok")
    backend.tokenizer = tiny_tok
    rec = rationale_record(verdicts={"d0": 1.0}, rationales={"d0": "States 100 C."})
    ex = build_sft_examples(DATA, [rec], tokenizer=tiny_tok, max_doc_tokens=4)[0]
    served, truncated = RationaleReranker(backend, max_doc_tokens=4).prompts_for(QUERIES["q1"].text, [DOCS["d0"].contents])
    assert truncated == 1
    assert render_chat(tiny_tok, ex["messages"][:-1]) == served[0]
    assert "Document: Water boils at" in served[0] and "sea level" not in served[0]

    prompt, completion = sft_texts(tiny_tok, ex["messages"])
    assert prompt == served[0] and completion == "States 100 C.\nVerdict: yes<|im_end|>\n"
    ids, mask = sft_sequence(tiny_tok, ex["messages"])
    n_prompt = len(tiny_tok.encode(served[0], add_special_tokens=False))
    assert mask == [0] * n_prompt + [1] * (len(ids) - n_prompt)
    assert tiny_tok.decode(ids[n_prompt:]) == completion

    class NoTemplate:  # a base model (no chat template): the answer then EOS
        chat_template = None
        eos_token = "</s>"

    p, c = sft_texts(NoTemplate(), ex["messages"])
    assert p.endswith("\n\nAnswer:") and c == "States 100 C.\nVerdict: yes</s>"


# -- reranker with a scripted backend -----------------------------------------------------------------

class Scripted(Backend):
    """Generates a fixed answer per document; label log-probs from ``lp`` (None: NotImplementedError)."""

    def __init__(self, answers: dict[str, str], lp=(-0.2, -1.9)):
        super().__init__("scripted")
        self.answers, self.lp, self.scored = answers, lp, []

    def generate(self, prompts, params=None):
        out = []
        for p in prompts:
            text = next(a for key, a in self.answers.items() if key in p)
            self.stats["calls"] += 1
            out.append(Generation(text, 10, 5))
        return out

    def label_logprobs(self, prompts, labels, variants=True):
        if self.lp is None:
            raise NotImplementedError
        self.scored.extend(prompts)
        return np.tile(np.array(self.lp, dtype=float), (len(prompts), 1))


def test_reranker_scores_verdict_logits_and_falls_back():
    docs = [DOCS["d0"], DOCS["d1"], DOCS["d3"]]
    answers = {"Water boils": "It gives 100 C.\nVerdict: yes", "Eiffel": "About Paris.\nVerdict: no",
               "Cats": "Cats, not water."}  # no verdict at all
    backend = Scripted(answers)
    r = ReasoningStudentReranker(backend)
    ranking = r.rerank(QUERIES["q1"], docs)
    p = 1 / (1 + math.exp(-1.9 + 0.2))
    assert ranking.scores == pytest.approx([p] * 3)
    assert ranking.cost["parse_failures"] == 1 and ranking.cost["forced_verdicts"] == 1
    assert ranking.cost["score_fallbacks"] == 0
    assert all(s.endswith("Verdict:") for s in backend.scored)
    assert backend.scored[2].endswith("Cats, not water.\nVerdict:")
    assert ranking.rationales == {"d0": "It gives 100 C.", "d1": "About Paris.", "d3": "Cats, not water."}
    assert ranking.extra["verdicts"] == {"d0": 1.0, "d1": 0.0, "d3": None}

    # no log-probabilities: the parsed verdict, 0.5 for the unreadable one
    for lp in (None, (-math.inf, -math.inf)):
        ranking = ReasoningStudentReranker(Scripted(answers, lp=lp)).rerank(QUERIES["q1"], docs)
        assert ranking.docids == ["d0", "d3", "d1"] and ranking.scores == [1.0, 0.5, 0.0]
        assert ranking.cost["score_fallbacks"] == 3 and ranking.cost["parse_failures"] == 1
    with pytest.raises(LlmrankError, match="asks for a grade"):
        ReasoningStudentReranker(backend, "rationale_graded")


# -- training on the tiny model -----------------------------------------------------------------------

OVERFIT = [  # two examples, one yes, one no
    rationale_record(ranking=("d0", "d1"), verdicts={"d0": 1.0, "d1": 0.0},
                     rationales={"d0": "The document gives the boiling point.", "d1": "The document is about Paris."}),
]


def test_labels_mask_prompt_tokens(tiny_dir, tiny_tok, tmp_path, one_thread):
    examples = build_sft_examples(DATA, OVERFIT, tokenizer=tiny_tok)
    cfg = sft_args(tmp_path, model=str(tiny_dir), lora_r=4, lora_alpha=8, lora_dropout=0.0)
    trainer, tok, _, prompt = build_sft_trainer(cfg, examples)
    assert trainer.completion_only_loss and trainer.args.max_length == cfg.max_length
    batch = next(iter(trainer.get_train_dataloader()))
    labels, ids, att = batch["labels"], batch["input_ids"], batch["attention_mask"]
    assert labels.shape == ids.shape and labels.shape[0] == 2
    for row, ex in enumerate(examples):
        p_text, c_text = sft_texts(tok, ex["messages"])
        n_p = len(tok.encode(p_text, add_special_tokens=False))
        n = int(att[row].sum())
        assert ids[row, :n_p].tolist() == tok.encode(build_rationale_prompt(prompt, tok, QUERIES["q1"].text,
                                                                            DOCS[ex["docid"]].contents)[0],
                                                     add_special_tokens=False)
        assert (labels[row, :n_p] == -100).all()  # the prompt carries no loss
        assert (labels[row, n_p:n] == ids[row, n_p:n]).all()  # the whole answer does, end-of-turn included
        assert (labels[row, n:] == -100).all()  # nor does the padding
        assert tok.decode(ids[row, n_p:n]) == c_text

    # the answer-only LM head gives trl's own loss and metrics (trl's CPU path projects every position)
    from trl import SFTTrainer

    model = trainer.model
    ours = trainer.compute_loss(model, dict(batch))
    theirs = SFTTrainer.compute_loss(trainer, model, dict(batch))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    n_answer = int((labels[:, 1:] != -100).sum())
    assert trainer._labelled_head(model, batch) and n_answer > 10
    m = trainer._metrics["train"]
    assert m["entropy"][0] == pytest.approx(m["entropy"][1], rel=1e-4)
    assert m["mean_token_accuracy"][0] == pytest.approx(m["mean_token_accuracy"][1])


@pytest.fixture
def one_thread():
    """Tiny matrices gain nothing from threads, and lose a lot on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_full_finetuning_sft_trains_every_layer_but_the_embeddings(tiny_dir, tiny_tok, tmp_path, one_thread):
    """``finetune: full`` for a reasoning student: no LoRA, the token embeddings (and the head tied to them)
    frozen, as for the pointwise student; every transformer layer trainable."""
    examples = build_sft_examples(DATA, OVERFIT, tokenizer=tiny_tok)
    trainer, _, _, _ = build_sft_trainer(sft_args(tmp_path, model=str(tiny_dir), finetune="full"), examples)
    model = trainer.model
    assert not hasattr(model, "peft_config")
    assert not model.get_input_embeddings().weight.requires_grad
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    layers = {n for n, _ in model.named_parameters() if n.startswith("model.layers.")}
    assert layers and layers <= trainable and not any("embed_tokens" in n for n in trainable)


def test_sft_overfits_saves_and_reranks(tiny_dir, tiny_tok, tmp_path, one_thread):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, TrainerCallback

    from llmrank.backends.hf import HFBackend

    from llmrank.students import STUDENT_FILE, load_student
    from llmrank.students.reasoning import ReasoningStudent

    class Losses(TrainerCallback):
        values: list = []

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.values.append(logs["loss"])

    losses = Losses()
    examples = build_sft_examples(DATA, OVERFIT, tokenizer=tiny_tok)
    cfg = sft_args(tmp_path / "run", model=str(tiny_dir), lora_r=8, lora_alpha=16, lora_dropout=0.0, max_new_tokens=24,
                   merge=True)
    out = ReasoningStudent.train(cfg, examples, callbacks=[losses])
    assert len(losses.values) == 15
    # a random tiny model's logits are small (tied embeddings of std 0.02), so the loss cannot fall far below
    # log(vocab) ~ 10.8; it falls steadily all the same
    assert np.mean(losses.values[-3:]) < np.mean(losses.values[:3]) - 0.4, losses.values
    assert losses.values[-1] < min(losses.values[:5]), losses.values

    adapter = out / "adapter"
    weights = load_file(adapter / "adapter_model.safetensors")
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert lora_b and all(float(w.abs().max()) > 0 for w in lora_b)  # B starts at zero: every one moved
    meta = json.loads((adapter / STUDENT_FILE).read_text())
    assert meta["kind"] == "reasoning" and meta["prompt_key"] == "rationale@1"
    assert meta["parse"]["verdict_regex"] == r"Verdict:\s*(yes|no)" and meta["parse"]["output_format"] == OUTPUT_FORMAT
    assert (out / "merged" / STUDENT_FILE).is_file()

    p_yes = []
    for path in (adapter, out / "merged"):
        student = load_student(path, device="cpu")
        assert isinstance(student, ReasoningStudentReranker) and student.params.max_tokens == 24
        ranking = student.rerank(QUERIES["q1"], [DOCS["d1"], DOCS["d0"], DOCS["d3"]])
        assert sorted(ranking.docids) == ["d0", "d1", "d3"] and len(ranking.scores) == 3
        assert all(0.0 <= s <= 1.0 for s in ranking.scores)
        assert ranking.cost["calls"] >= 6 and "parse_failures" in ranking.cost
        assert set(ranking.rationales) == {"d0", "d1", "d3"}
        p_yes.append(ranking.extra["p_yes"])
    # the adapter and the merged model score alike, and unlike the untrained base: the adapter is in effect
    assert p_yes[0] == pytest.approx(p_yes[1], abs=1e-4)
    base = HFBackend(str(tiny_dir), model_obj=AutoModelForCausalLM.from_pretrained(tiny_dir), tokenizer=tiny_tok, device="cpu")
    untrained = ReasoningStudentReranker(base, max_tokens=24).rerank(QUERIES["q1"], [DOCS["d1"], DOCS["d0"], DOCS["d3"]])
    assert untrained.extra["p_yes"] != pytest.approx(p_yes[0], abs=1e-3)
    assert isinstance(load_student(adapter), ReasoningStudentReranker)


def test_a_student_is_reranked_only_as_its_own_kind(tmp_path, tiny_dir):
    import argparse

    from llmrank.commands.rerank import build_from_args
    from llmrank.students import STUDENT_FILE

    merged = tmp_path / "pw"
    shutil.copytree(tiny_dir, merged)
    (merged / STUDENT_FILE).write_text(json.dumps({"kind": "pointwise", "prompt": "yes_no", "max_doc_tokens": 64}))
    args = argparse.Namespace(model=str(merged), method="reasoning", prompt=None, dtype="float32", batch_size=None)
    with pytest.raises(LlmrankError, match="is a pointwise student; rerank it with --method pointwise"):
        build_from_args(args, {})
    args.method, args.prompt = "pointwise", "graded"
    with pytest.raises(LlmrankError, match="drop --prompt"):
        build_from_args(args, {})
