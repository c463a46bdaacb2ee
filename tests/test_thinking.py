"""Thinking chat templates: scoring prompts end at the answer position, rationales may think first.

The test tokenizer is the embedded SmolLM2 tokenizer with a chat template written here in the style of
Qwen3's (it thinks unless ``enable_thinking`` is false, which renders an empty closed block) and one in the
style of DeepSeek-R1's (the generation prompt always opens a block); the plain ChatML template is the
control.
"""

from __future__ import annotations

from collections import Counter

import pytest

from llmrank.prompts import load_prompt, render_chat, split_thinking
from llmrank.rerankers.rationale import RationaleReranker, parse_rationale

SWITCH = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)
ALWAYS = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)
MESSAGES = [{"role": "user", "content": "Is the document relevant?"}]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from llmrank.models import tokenizer_dir

    return AutoTokenizer.from_pretrained(str(tokenizer_dir("smollm2-135m")))


def _with(tokenizer, template):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return tok


def test_a_thinking_template_is_rendered_with_thinking_off_for_scoring(tokenizer):
    tok = _with(tokenizer, SWITCH)
    text = render_chat(tok, MESSAGES)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # the template's own default would think: the prompt would end where the model starts musing
    assert tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True).endswith("assistant\n")
    assert render_chat(tok, MESSAGES, thinking=True).endswith("<|im_start|>assistant\n")


def test_a_template_that_always_opens_a_block_gets_it_closed(tokenizer):
    tok = _with(tokenizer, ALWAYS)
    assert tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True).endswith("<think>\n")
    assert render_chat(tok, MESSAGES).endswith("assistant\n<think>\n\n</think>\n\n")
    assert render_chat(tok, MESSAGES, thinking=True).endswith("assistant\n<think>\n")  # left open to think


def test_a_plain_template_is_unchanged(tokenizer):
    for thinking in (False, True):
        assert render_chat(tokenizer, MESSAGES, thinking=thinking) == tokenizer.apply_chat_template(
            MESSAGES, tokenize=False, add_generation_prompt=True)
    assert "<think>" not in render_chat(tokenizer, MESSAGES)


def test_pointwise_scoring_prompts_end_at_the_answer_position(tokenizer):
    from llmrank.rerankers.pointwise import build_pointwise_prompt

    tok = _with(tokenizer, SWITCH)
    prompt, _ = build_pointwise_prompt(load_prompt("yes_no"), tok, "what boils water", "Water boils at 100 C.")
    assert prompt.endswith("</think>\n\n")
    assert prompt.rfind("<think>") < prompt.rfind("</think>")


@pytest.mark.parametrize("text,verdict,thought", [
    ("<think>\nThe query asks X. Verdict: no, at first sight... but it does answer it.\n</think>\n"
     "The passage answers the question.\nVerdict: yes", 1.0, "The query asks X. Verdict: no, at first sight... "
     "but it does answer it."),
    ("Looks related. Verdict: yes maybe\n</think>\n\nIt is about another disease.\nVerdict: no", 0.0,
     "Looks related. Verdict: yes maybe"),  # the prompt opened the block: the generation only closes it
    ("<think>\nStill weighing it, Verdict: yes", None, "Still weighing it, Verdict: yes"),  # never closed
    ("Plain explanation.\nVerdict: yes", 1.0, ""),
])
def test_a_rationale_with_a_think_block_is_read_after_it(text, verdict, thought):
    explanation, score = parse_rationale(text)
    assert score == verdict
    assert split_thinking(text)[0] == thought
    if verdict is not None:
        assert "<think>" not in explanation and "</think>" not in explanation


def test_the_rationale_teacher_thinks_on_request_and_counts_the_thought(tokenizer, tiny_model_dir):
    """The rationale reranker on the tiny model with a thinking template: ``thinking: true`` leaves the block
    to the model; the answers it is handed are parsed after their blocks and the thought's tokens counted."""
    from llmrank.backends.hf import HFBackend
    from llmrank.backends.base import Generation
    from llmrank.data.types import Doc, Query

    backend = HFBackend(str(tiny_model_dir), dtype="float32")
    backend.tokenizer.chat_template = SWITCH
    docs = [Doc("d1", "Water boils at 100 C."), Doc("d2", "Cats sleep a lot.")]
    quiet = RationaleReranker(backend)
    assert quiet.prompts_for("q", ["doc"])[0][0].endswith("</think>\n\n")
    thinker = RationaleReranker(backend, thinking=True)
    assert thinker.prompts_for("q", ["doc"])[0][0].endswith("assistant\n")
    assert thinker.cache_key["thinking"] is True and "thinking" not in quiet.cache_key
    steps = thinker.steps(Query("q", "what temperature boils water"), docs, Counter())
    request = next(steps)
    assert len(request.prompts) == 2
    thoughts = ["It mentions boiling.", "Nothing about water here, so no."]
    answers = [Generation(f"<think>{thoughts[0]}</think>\nIt gives the temperature.\nVerdict: yes", 10, 20),
               Generation(f"<think>{thoughts[1]}</think>\nIt is about cats.\nVerdict: no", 10, 20)]
    with pytest.raises(StopIteration) as done:
        steps.send(answers)
    ranking = done.value.value
    assert ranking.docids == ["d1", "d2"]
    assert ranking.rationales == {"d1": "It gives the temperature.", "d2": "It is about cats."}
    assert ranking.cost["think_tokens"] == sum(backend.count_tokens(t) for t in thoughts)
    assert ranking.cost["parse_failures"] == 0
