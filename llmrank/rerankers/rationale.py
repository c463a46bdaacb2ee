"""Rationale reranking: a generative pointwise judge that explains, then gives a verdict, per document.

The model writes a short explanation and a final line ``Verdict: yes|no`` (``prompts/rationale.yaml``)
or ``Score: 0-3`` (``prompts/rationale_graded.yaml``). The verdict is the document's score (yes = 1,
no = 0, or the grade); documents with equal scores keep their first-stage order. The explanation is
the rationale (``Ranking.rationales``) a reasoning student is SFT-trained on.

An answer whose verdict cannot be read is never fatal: it is counted in ``cost["parse_failures"]`` and
scored in the middle of the scale (0.5, or half the top grade), i.e. between the documents judged
relevant and those judged not.

**Rationalization** (``rationalize=True``, STaR: Zelikman et al., 2022), for when the documents are judged
and the teacher is too weak to be trusted with the verdict: the judged label of each document (from the
dataset's qrels) is put into the prompt (a prompt with a ``{{ label }}`` field; ``rationale`` becomes
``rationale_rationalize``) and the model is asked to explain it. The verdict is then the label itself, not
what the model wrote, so every explanation a reasoning student is trained on ends in the right verdict. The
label is ``yes`` for a grade ``>= min_grade`` (default 1), else ``no`` — an unjudged document is ``no``; for
a graded prompt it is the grade (at most the top one). ``cost["rationalize_mismatch"]`` counts outputs whose
own verdict line contradicts the label (their explanation is kept: the text before that line);
``cost["parse_failures"]`` still counts outputs without a readable verdict line. A query without any
judgement is an error (there is no label to explain).
"""

from __future__ import annotations

import re
from collections import Counter

from llmrank.backends.base import Backend, GenerateRequest, GenerationParams
from llmrank.data.types import Doc, Query
from llmrank.errors import LlmrankError
from llmrank.prompts import PromptTemplate, load_prompt, render_chat, split_thinking
from llmrank.rerankers.base import ranking_from_scores
from llmrank.rerankers.scheduler import StepReranker
from llmrank.rerankers.pointwise import DEFAULT_MAX_DOC_TOKENS, truncate_document

_SEP = r"[\s:=*_`\"'“”‘’()\[\]<>#|\-–—]*"
_YES_WORDS = r"yes|no|not\s+relevant|irrelevant|non[-\s]?relevant|relevant|true|false"
_VERDICT = re.compile(rf"\b(?:final\s+)?(?:verdict|answer|judge?ment|decision|label){_SEP}({_YES_WORDS})\b", re.I)
_SCORE = re.compile(rf"\b(?:final\s+)?(?:score|grade|rating|relevance(?:\s+score)?){_SEP}(\d+(?:\.\d+)?)(?:\s*/\s*\d+)?(?!\s*[-–]\s*\d)",
                    re.I)
_BARE = re.compile(r"^[\s*_`\"'“”()\[\].!#>]*(yes|no|\d+(?:\.\d+)?)[\s*_`\"'“”()\[\].!]*$", re.I)


def _word_score(word: str) -> float:
    w = re.sub(r"[\s-]+", " ", word.lower()).strip()
    return 1.0 if w in ("yes", "relevant", "true") else 0.0


def parse_rationale(text: str, graded: bool | None = None, max_grade: int = 3) -> tuple[str, float | None]:
    """``(explanation, score)`` of a generated judgement; ``score`` is None when no verdict can be read.

    The LAST verdict in the text counts: ``Verdict: yes`` / ``**Verdict:** No.`` / ``verdict - not
    relevant`` (1 or 0), or ``Score: 2`` / ``Grade: 3/3`` (the grade, which must lie in 0..max_grade);
    failing those, a last line that is just ``yes``/``no``/a grade. ``graded=False`` reads yes/no forms
    only, ``graded=True`` grades only, ``None`` either. The explanation is the text before the verdict's
    line (the whole text when there is no verdict). A ``<think>…</think>`` block is passed over: the verdict
    and the explanation are read after it (a block never closed leaves no verdict).
    """
    text = split_thinking(text)[1]  # a think block's musings are no verdict: read what follows it
    found: list[tuple[int, float | None]] = []  # (start, score) of each candidate verdict
    if graded is not True:
        found += [(m.start(), _word_score(m.group(1))) for m in _VERDICT.finditer(text)]
    if graded is not False:
        for m in _SCORE.finditer(text):
            v = float(m.group(1))
            found.append((m.start(), v if 0 <= v <= max_grade else None))
    if found:
        start, score = max(found, key=lambda x: x[0])
    else:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        m = _BARE.match(lines[-1]) if lines else None
        if m is None:
            return text.strip(), None
        word = m.group(1).lower()
        if word in ("yes", "no"):
            score = None if graded is True else _word_score(word)
        else:
            v = float(word)
            score = v if graded is not False and 0 <= v <= max_grade else None
        start = text.rstrip().rfind(lines[-1])
    line_start = text.rfind("\n", 0, start) + 1
    explanation = text[:line_start].strip() if score is not None else text.strip()
    if score is not None and not explanation:  # verdict and explanation on one line: keep what precedes it
        explanation = text[:start].strip()
    if score is not None:
        explanation = explanation.rstrip(" \t\n*_#>`-–—").strip()
    return explanation, score


def build_rationale_messages(prompt: PromptTemplate, tokenizer, query: str, document: str,
                             max_doc_tokens: int | None = DEFAULT_MAX_DOC_TOKENS, **fields) -> tuple[list[dict], bool]:
    """The chat messages (system?, user) asking for one (query, document) judgement, and whether the
    document was truncated: the one builder of rationale prompts (this reranker and the reasoning
    student's SFT examples, :mod:`llmrank.students.reasoning`, both call it). ``fields`` fills further
    template fields (``label`` for rationalization)."""
    document, truncated = truncate_document(tokenizer, document, max_doc_tokens)
    return prompt.messages(query=query, document=document, **fields), truncated


def build_rationale_prompt(prompt: PromptTemplate, tokenizer, query: str, document: str,
                           max_doc_tokens: int | None = DEFAULT_MAX_DOC_TOKENS, thinking: bool = False,
                           **fields) -> tuple[str, bool]:
    """The model input for one (query, document) judgement, and whether the document was truncated;
    ``thinking`` lets a thinking chat template think first (:func:`llmrank.prompts.render_chat`)."""
    messages, truncated = build_rationale_messages(prompt, tokenizer, query, document, max_doc_tokens, **fields)
    return render_chat(tokenizer, messages, thinking=thinking), truncated


RATIONALIZE_SUFFIX = "_rationalize"
"""A prompt ``NAME`` without a ``{{ label }}`` field is rationalized with the prompt ``NAME_rationalize``."""


def rationalize_prompt(prompt: PromptTemplate) -> PromptTemplate:
    """The prompt that asks to explain a given label: ``prompt`` itself when its template reads ``label``,
    else ``<name>_rationalize`` (``rationale`` -> ``rationale_rationalize``)."""
    if "label" in prompt.fields:
        return prompt
    try:
        variant = load_prompt(prompt.name + RATIONALIZE_SUFFIX)
    except LlmrankError:
        raise LlmrankError(f"rationalize: prompt '{prompt.name}' has no {{{{ label }}}} field and there is no prompt "
                           f"'{prompt.name}{RATIONALIZE_SUFFIX}'; give a rationale prompt whose template shows the "
                           "judged label as {{ label }} (e.g. rationale_rationalize)") from None
    if variant.method != "rationale" or "label" not in variant.fields:
        raise LlmrankError(f"{variant.path}: a rationalization prompt is a rationale prompt whose template reads "
                           "{{ label }}")
    if sorted(variant.answers) != sorted(prompt.answers):
        raise LlmrankError(f"{variant.path}: answers {sorted(variant.answers)} differ from those of "
                           f"'{prompt.name}' ({sorted(prompt.answers)})")
    return variant


def parse_verdict(text: str, graded: bool | None = None, max_grade: int = 3) -> float | None:
    """The verdict of a generated judgement (yes = 1.0, no = 0.0, or the grade), None if unreadable."""
    return parse_rationale(text, graded, max_grade)[1]


class RationaleReranker(StepReranker):
    """Generates an explanation and a verdict for each (query, document) and ranks by verdict."""

    method = "rationale"
    has_scores = True
    has_rationales = True

    def __init__(self, backend: Backend, prompt: str | PromptTemplate = "rationale",
                 max_doc_tokens: int | None = DEFAULT_MAX_DOC_TOKENS, max_tokens: int = 192,
                 temperature: float = 0.0, seed: int = 0, rationalize: bool = False, qrels=None,
                 min_grade: int = 1, thinking: bool = False):
        self.backend = backend
        if not isinstance(thinking, bool):
            raise LlmrankError(f"option thinking: expected true or false, got {thinking!r}")
        # a model whose chat template can think (Qwen3's enable_thinking) reasons in a <think> block before
        # its judgement: the verdict is read after the block and the block's tokens are counted (think_tokens)
        self.thinking = thinking
        self.prompt = load_prompt(prompt) if isinstance(prompt, str) else prompt
        if self.prompt.method != "rationale":
            raise ValueError(f"prompt '{self.prompt.name}' is for {self.prompt.method}, not rationale")
        if not isinstance(rationalize, bool):
            raise LlmrankError(f"option rationalize: expected true or false, got {rationalize!r}")
        self.rationalize = rationalize
        self.qrels = qrels
        self.min_grade = min_grade
        if rationalize:
            if not qrels:
                raise LlmrankError("option rationalize: the teacher explains the judged labels, so it needs a "
                                   "dataset with judgements (qrels); this one has none")
            if not isinstance(min_grade, int) or min_grade < 1:
                raise LlmrankError(f"option min_grade: expected an integer >= 1, got {min_grade!r}")
            self.prompt = rationalize_prompt(self.prompt)
        elif "label" in self.prompt.fields:
            raise LlmrankError(f"prompt '{self.prompt.name}' shows the judged label ({{{{ label }}}}): use it with "
                               "option rationalize: true")
        keys = list(self.prompt.answers) or ["yes", "no"]
        self.graded = sorted(keys) != ["no", "yes"]
        if self.graded:
            try:
                self.max_grade = int(max(float(k) for k in keys))
            except ValueError:
                raise ValueError(f"prompt '{self.prompt.name}': answers are either {{yes, no}} or numeric grades, "
                                 f"got {keys}") from None
        else:
            self.max_grade = 1
        self.fallback = self.max_grade / 2
        self.max_doc_tokens = max_doc_tokens
        self.params = GenerationParams(max_tokens=max_tokens, temperature=temperature, seed=seed)

    @property
    def cache_key(self) -> dict:
        key = {"method": self.method, "model": self.backend.model, "prompt": self.prompt.key,
               "max_doc_tokens": self.max_doc_tokens, "max_tokens": self.params.max_tokens,
               "temperature": self.params.temperature, "seed": self.params.seed}
        if self.rationalize:  # absent when off, so the keys of runs made before the option existed still hold
            key.update(rationalize=True, min_grade=self.min_grade)
        if self.thinking:
            key["thinking"] = True
        return key

    def label_of(self, qid: str, docid: str) -> float:
        """The verdict rationalization explains: 1/0 (grade >= ``min_grade``), or the grade for a graded prompt."""
        grade = self.qrels[qid].get(docid, 0)
        if self.graded:
            return float(min(max(grade, 0), self.max_grade))
        return 1.0 if grade >= self.min_grade else 0.0

    def _label_word(self, verdict: float) -> str:
        if self.graded:
            return self.prompt.answers.get(str(int(verdict)), str(int(verdict)))
        return self.prompt.answers.get("yes" if verdict else "no", "yes" if verdict else "no")

    def prompts_for(self, query: str, documents: list[str], labels: list[str] | None = None) -> tuple[list[str], int]:
        built = [build_rationale_prompt(self.prompt, self.backend.tokenizer, query, d, self.max_doc_tokens,
                                        thinking=self.thinking, **({} if labels is None else {"label": labels[i]}))
                 for i, d in enumerate(documents)]
        return [p for p, _ in built], sum(t for _, t in built)

    def steps(self, query: Query, docs: list[Doc], cost: Counter):
        """One request: a judgement of every document (with rationalize: an explanation of its judged label)."""
        labels = None
        if self.rationalize:
            if query.qid not in self.qrels:
                raise LlmrankError(f"rationalize: query '{query.qid}' has no judgements in the qrels, so there is "
                                   "no label to explain; teach only judged queries")
            labels = [self.label_of(query.qid, d.docid) for d in docs]
        prompts, truncated = self.prompts_for(query.text, [d.contents for d in docs],
                                              None if labels is None else [self._label_word(v) for v in labels])
        gens = yield GenerateRequest(prompts, self.params)
        scores, rationales, verdicts, failures, mismatch, thought = [], {}, {}, 0, 0, 0
        for i, (doc, gen) in enumerate(zip(docs, gens)):
            explanation, verdict = parse_rationale(gen.text, self.graded, self.max_grade)
            think = split_thinking(gen.text)[0]
            thought += self.backend.count_tokens(think) if think else 0
            if verdict is None:
                failures += 1
            if labels is not None:
                mismatch += verdict is not None and verdict != labels[i]
                verdict = labels[i]
            scores.append(self.fallback if verdict is None else verdict)
            rationales[doc.docid] = explanation
            verdicts[doc.docid] = verdict
        cost = Counter({k: v for k, v in cost.items() if v})
        cost["parse_failures"] = failures
        cost["truncated_docs"] = truncated
        if thought:
            cost["think_tokens"] = thought
        if labels is not None:
            cost["rationalize_mismatch"] = mismatch
        return ranking_from_scores(docs, scores, rationales=rationales, cost=cost, extra={"verdicts": verdicts})


# -- the strict reading (rewards, refine pairs): the answer must be exactly the expected form -------------

VERDICT_LINE = re.compile(r"[*_\s]*verdict[*_\s]*:[*_\s]*(yes|no)[*_\s]*[.!]?[*_\s]*", re.I)
GRADE_LINE = re.compile(r"[*_\s]*(?:score|grade)[*_\s]*:[*_\s]*([0-9]+)(?:\s*/\s*[0-9]+)?[*_\s]*\.?[*_\s]*", re.I)
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)


def answer_span(text: str, tags: bool = False) -> str | None:
    """The answer part of a completion: with ``tags``, the inside of its only ``<answer>…</answer>`` (None
    when there is not exactly one, or when anything but whitespace follows it); otherwise its last
    non-empty line (None for an empty completion)."""
    text = text or ""
    if tags:
        found = list(ANSWER_TAG.finditer(text))
        if len(found) != 1 or text[found[0].end():].strip():
            return None
        return found[0].group(1).strip()
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else None


def strict_verdict(text: str, graded: bool = False, max_grade: int = 3, tags: bool = False) -> float | None:
    """The verdict (yes = 1.0, no = 0.0) or grade (0..max_grade) of a completion whose answer is exactly
    ``Verdict: yes|no`` (or ``Score: g`` / ``Grade: g`` when ``graded``); None otherwise."""
    span = answer_span(text, tags)
    if span is None:
        return None
    line = span.strip()
    pattern = GRADE_LINE if graded else VERDICT_LINE
    if not pattern.fullmatch(line):
        return None
    value = parse_rationale(line, graded=graded, max_grade=max_grade)[1]
    if value is None or (graded and not 0 <= value <= max_grade):
        return None
    return value
