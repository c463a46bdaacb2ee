"""Rationale reranking: a generative pointwise judge that explains, then gives a verdict, per document.

The model writes a short explanation and a final line ``Verdict: yes|no`` (``prompts/rationale.yaml``)
or ``Score: 0-3`` (``prompts/rationale_graded.yaml``). The verdict is the document's score (yes = 1,
no = 0, or the grade); documents with equal scores keep their first-stage order. The explanation is
the rationale (``Ranking.rationales``) a reasoning student is SFT-trained on.

An answer whose verdict cannot be read is never fatal: it is counted in ``cost["parse_failures"]`` and
scored in the middle of the scale (0.5, or half the top grade), i.e. between the documents judged
relevant and those judged not.
"""

from __future__ import annotations

import re
from collections import Counter

from llmrank.backends.base import Backend, GenerateRequest, GenerationParams
from llmrank.data.types import Doc, Query
from llmrank.prompts import PromptTemplate, load_prompt, render_chat
from llmrank.rerankers.base import Ranking, ranking_from_scores
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
    line (the whole text when there is no verdict).
    """
    text = text or ""
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
                             max_doc_tokens: int | None = DEFAULT_MAX_DOC_TOKENS) -> tuple[list[dict], bool]:
    """The chat messages (system?, user) asking for one (query, document) judgement, and whether the
    document was truncated: the one builder of rationale prompts (this reranker and the reasoning
    student's SFT examples, :mod:`llmrank.training.sft`, both call it)."""
    document, truncated = truncate_document(tokenizer, document, max_doc_tokens)
    return prompt.messages(query=query, document=document), truncated


def build_rationale_prompt(prompt: PromptTemplate, tokenizer, query: str, document: str,
                           max_doc_tokens: int | None = DEFAULT_MAX_DOC_TOKENS) -> tuple[str, bool]:
    """The model input for one (query, document) judgement, and whether the document was truncated."""
    messages, truncated = build_rationale_messages(prompt, tokenizer, query, document, max_doc_tokens)
    return render_chat(tokenizer, messages), truncated


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
                 temperature: float = 0.0, seed: int = 0):
        self.backend = backend
        self.prompt = load_prompt(prompt) if isinstance(prompt, str) else prompt
        if self.prompt.method != "rationale":
            raise ValueError(f"prompt '{self.prompt.name}' is for {self.prompt.method}, not rationale")
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
        return {"method": self.method, "model": self.backend.model, "prompt": self.prompt.key,
                "max_doc_tokens": self.max_doc_tokens, "max_tokens": self.params.max_tokens,
                "temperature": self.params.temperature, "seed": self.params.seed}

    def prompts_for(self, query: str, documents: list[str]) -> tuple[list[str], int]:
        built = [build_rationale_prompt(self.prompt, self.backend.tokenizer, query, d, self.max_doc_tokens)
                 for d in documents]
        return [p for p, _ in built], sum(t for _, t in built)

    def steps(self, query: Query, docs: list[Doc], cost: Counter):
        """One request: a judgement of every document."""
        prompts, truncated = self.prompts_for(query.text, [d.contents for d in docs])
        gens = yield GenerateRequest(prompts, self.params)
        scores, rationales, verdicts, failures = [], {}, {}, 0
        for doc, gen in zip(docs, gens):
            explanation, verdict = parse_rationale(gen.text, self.graded, self.max_grade)
            if verdict is None:
                failures += 1
            scores.append(self.fallback if verdict is None else verdict)
            rationales[doc.docid] = explanation
            verdicts[doc.docid] = verdict
        cost = Counter({k: v for k, v in cost.items() if v})
        cost["parse_failures"] = failures
        cost["truncated_docs"] = truncated
        return ranking_from_scores(docs, scores, rationales=rationales, cost=cost, extra={"verdicts": verdicts})
