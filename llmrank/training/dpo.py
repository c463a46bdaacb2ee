"""DPO refinement on ranking preferences (trl ``DPOTrainer`` + a peft LoRA), for either student kind.

Direct Preference Optimization (Rafailov et al., NeurIPS 2023) needs, per example, ONE prompt and two
completions of it, the chosen preferred to the rejected; its loss is
``-log σ(β[(log π(c|x) - log π_ref(c|x)) - (log π(r|x) - log π_ref(r|x))])`` with the distilled student as
the reference ``π_ref`` (see :mod:`llmrank.training.refined`). Ranking data is turned into that shape so
that each example is a genuine preference over two answers to the same input the student is served:

**Reasoning student** (:func:`reasoning_pairs`; PLaD's pseudo-preference, Zhang et al. 2024, "PLaD:
Preference-based Large Language Model Distillation with Pseudo-Preference Pairs": teacher ≻ student).
Prompt: the rationale prompt of (query, document), as served. Chosen: the teacher's explanation with the
verdict it supports, ``<explanation>\\nVerdict: yes|no`` — only where that verdict agrees with the target
(the qrels label when the document is judged, else the teacher's verdict), so the preferred answer is never
a wrong one. Rejected: one of the student's own ``samples`` sampled completions whose strictly-read verdict
disagrees with the target (or cannot be read); a document where every sample is right gives no example.

**Pointwise yes/no student** (:func:`pointwise_pairs`). The student's score is
``s(x) = log π(yes|x) - log π(no|x)`` on the single answer token. Ranking preferences relate two documents,
i.e. two prompts, which one DPO example cannot hold; but for one prompt with chosen = the "yes" token and
rejected = the "no" token, DPO's implicit reward margin is exactly ``β (s(x) - s_ref(x))``, so
``(x⁺, yes ≻ no)`` raises the student's score of x⁺ and ``(x⁻, no ≻ yes)`` lowers that of x⁻, relative to
the distilled student. The pairs used are those the teacher orders and the student misorders: x⁺ has target
"yes" (judged relevant, or the teacher's yes / top-``top_m``), x⁻ has target "no", and the student scores
``s(x⁻) >= s(x⁺)``; hardest first (largest ``s(x⁻) - s(x⁺)``), ``pairs_per_query`` per query; plus
``anchors`` times as many pairs the student orders right, closest first (errors alone are a biased sample,
from which DPO learns to invert a good student's judgement). Because a
pair always crosses the yes/no boundary, a document only ever gets one direction (a document above and
below others in the teacher's order would otherwise be pushed up and down at once); each document's example
appears once. Chosen and rejected are exactly the one answer token the student is trained, scored and
served with — the dataset is tokenized here (``prompt_ids``, ``chosen_ids``, ``rejected_ids``), because trl
would append an EOS token to text completions and the preference would include it.

**Output**: see :mod:`llmrank.training.refined`; ``trainer_log.json`` holds ``rewards/accuracies`` and
``rewards/margins`` per logged step.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from llmrank.data.types import RankingData
from llmrank.errors import LlmrankError
from llmrank.training.refined import check_method, lora_config, save_refined, start_model, student_meta

log = logging.getLogger(__name__)
LOG_KEYS = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")


def _targets(data: RankingData, rec: dict, top_m: int) -> dict[str, bool]:
    """``{docid: relevant?}`` for a teacher record's documents: the qrels label (> 0) when the query is
    judged (unjudged documents are not relevant), else the teacher's verdict / top-``top_m``."""
    from llmrank.students.reasoning import teacher_verdicts

    judged = (data.qrels or {}).get(str(rec["qid"]))
    verdicts = teacher_verdicts(rec, top_m=top_m)
    out = {}
    for d in rec["ranking"]:
        if judged:
            out[d] = float(judged.get(d, 0)) > 0
        elif verdicts.get(d) is not None:
            out[d] = bool(verdicts[d])
    return out


def _each(qids: list[str], desc: str, progress: bool):
    """``qids`` one by one, with a bar on a terminal (``progress``) or periodic lines for a log."""
    if progress:
        from tqdm.auto import tqdm

        yield from tqdm(qids, desc=desc, unit="query")
        return
    from llmrank.eval.progress import ProgressLines

    lines = ProgressLines(f"[refine] {desc}", len(qids))
    for qid in qids:
        yield qid
        lines()


def _query_docs(data: RankingData, rec: dict):
    qid = str(rec["qid"])
    if qid not in data.queries:
        raise LlmrankError(f"teacher record for query '{qid}' has no query text in {data.source}")
    missing = [d for d in rec["ranking"] if d not in data.docs]
    if missing:
        raise LlmrankError(f"teacher record for query '{qid}' names document '{missing[0]}' not in {data.source}")
    return data.queries[qid], [data.docs[d] for d in rec["ranking"]]


def pointwise_pairs(data: RankingData, teacher_records: dict[str, dict], reranker, tokenizer, meta: dict,
                    pairs_per_query: int = 8, top_m: int = 5, queries: int | None = None, anchors: float = 1.0,
                    progress: bool = False) -> tuple[list[dict], dict]:
    """Tokenized single-answer-token DPO rows for a pointwise student (module docstring), and counts.
    ``reranker`` is the distilled student's (its scores decide which pairs it misorders).

    Per query: up to ``pairs_per_query`` (relevant, not relevant) pairs it misorders, hardest first, and
    ``anchors`` times as many that it orders right, closest first. The anchors matter: the misordered pairs
    alone are a biased sample (relevant documents that look irrelevant to the student and the reverse), and
    DPO on them alone teaches a good student to invert its own judgement (measured: a distilled student at
    0.7553 nDCG@10 fell to 0.0776 on SciFact test); with the anchors each update corrects errors while keeping
    what the student ranks right."""
    from llmrank.prompts import load_prompt
    from llmrank.rerankers.pointwise import build_pointwise_prompt
    from llmrank.students.pointwise import answer_token_ids

    prompt = load_prompt(meta["prompt"])
    yes_id, no_id = answer_token_ids(tokenizer, prompt)
    if anchors < 0:
        raise LlmrankError(f"refine.options.anchors: expected a number >= 0 (got {anchors})")
    rows, stats = [], {"queries": 0, "pairs_misordered": 0, "pairs_kept": 0, "pairs_anchor": 0}
    qids = list(teacher_records)[:queries] if queries else list(teacher_records)
    for qid in _each(qids, "student scores for DPO pairs", progress):
        rec = teacher_records[qid]
        query, docs = _query_docs(data, rec)
        target = _targets(data, rec, top_m)
        scores = dict(zip(*_scored(reranker, query, docs)))
        pos = [d for d in rec["ranking"] if target.get(d) is True]
        neg = [d for d in rec["ranking"] if target.get(d) is False]
        bad = [(scores[n] - scores[p], p, n) for p in pos for n in neg if scores[n] >= scores[p]]
        bad.sort(key=lambda t: -t[0])
        stats["queries"] += 1
        stats["pairs_misordered"] += len(bad)
        kept = bad[:pairs_per_query]
        stats["pairs_kept"] += len(kept)
        good = sorted((scores[p] - scores[n], p, n) for p in pos for n in neg if scores[p] > scores[n])
        anchor = good[:round(anchors * len(kept))]
        stats["pairs_anchor"] += len(anchor)
        seen = set()
        for _, p, n in kept + anchor:
            for d, relevant in ((p, True), (n, False)):
                if d in seen:
                    continue
                seen.add(d)
                text, _ = build_pointwise_prompt(prompt, tokenizer, query.text, data.docs[d].contents,
                                                 meta.get("max_doc_tokens"))
                rows.append({"prompt_ids": tokenizer.encode(text, add_special_tokens=False),
                             "chosen_ids": [yes_id if relevant else no_id],
                             "rejected_ids": [no_id if relevant else yes_id], "qid": qid, "docid": d})
    return rows, stats


def _scored(reranker, query, docs) -> tuple[list[str], list[float]]:
    ranking = reranker.rerank(query, docs)
    return list(ranking.docids), [float(s) for s in ranking.scores]


def reasoning_pairs(data: RankingData, teacher_records: dict[str, dict], model, tokenizer, meta: dict,
                    samples: int = 4, temperature: float = 1.0, max_new_tokens: int | None = None,
                    per_query: int = 4, top_m: int = 5, queries: int | None = None, seed: int = 0,
                    progress: bool = False) -> tuple[list[dict], dict]:
    """Tokenized (prompt, teacher's answer ≻ the student's disagreeing sample) rows for a reasoning student
    (module docstring), and counts. ``model`` is the distilled student (it samples the rejected answers)."""
    import torch

    from llmrank.prompts import load_prompt
    from llmrank.rerankers.rationale import build_rationale_messages
    from llmrank.training.rewards import strict_verdict
    from llmrank.students.reasoning import OUTPUT_FORMAT, sft_texts

    prompt = load_prompt(meta["prompt"])
    words = {True: prompt.answers.get("yes", "yes"), False: prompt.answers.get("no", "no")}
    max_new = int(max_new_tokens or meta.get("max_new_tokens") or 192)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    stats = {"documents": 0, "no_rationale": 0, "teacher_disagrees_with_label": 0, "student_always_right": 0, "pairs": 0}
    rows = []
    qids = list(teacher_records)[:queries] if queries else list(teacher_records)
    it = _each(qids, "student samples for DPO pairs", progress)
    if not any((teacher_records[q].get("rationales") for q in qids)):
        raise LlmrankError("reasoning DPO needs a teacher run with rationales (teacher.method: rationale): the "
                           "chosen answers are the teacher's explanations")
    from llmrank.students.reasoning import teacher_verdicts

    model.eval()
    for qid in it:
        rec = teacher_records[qid]
        query, _ = _query_docs(data, rec)
        target = _targets(data, rec, top_m)
        tverdict = teacher_verdicts(rec, top_m=top_m)
        rationales = rec.get("rationales") or {}
        docs = [d for d in rec["ranking"] if d in target]
        pos = [d for d in docs if target[d]][: max(1, per_query // 2)]
        neg = [d for d in docs if not target[d]][: per_query - len(pos)]
        for d in pos + neg:
            stats["documents"] += 1
            explanation = (rationales.get(d) or "").strip()
            if not explanation:
                stats["no_rationale"] += 1
                continue
            if tverdict.get(d) is None or bool(tverdict[d]) != target[d]:
                stats["teacher_disagrees_with_label"] += 1
                continue
            messages, _ = build_rationale_messages(prompt, tokenizer, query.text, data.docs[d].contents,
                                                   meta.get("max_doc_tokens"))
            chosen = OUTPUT_FORMAT.format(explanation=explanation, verdict=words[target[d]])
            p_text, c_text = sft_texts(tokenizer, messages + [{"role": "assistant", "content": chosen}])
            p_ids = tokenizer.encode(p_text, add_special_tokens=False)
            with torch.no_grad():
                gen = model.generate(torch.tensor([p_ids], device=model.device), do_sample=True,
                                     temperature=temperature, max_new_tokens=max_new, num_return_sequences=samples,
                                     pad_token_id=tokenizer.pad_token_id, attention_mask=torch.ones(1, len(p_ids), dtype=torch.long, device=model.device))
            texts = tokenizer.batch_decode(gen[:, len(p_ids):], skip_special_tokens=True)
            wrong = [t for t in texts if strict_verdict(t) is None or bool(strict_verdict(t)) != target[d]]
            if not wrong:
                stats["student_always_right"] += 1
                continue
            rejected = rng.choice(wrong).strip()
            _, r_text = sft_texts(tokenizer, messages + [{"role": "assistant", "content": rejected}])
            rows.append({"prompt_ids": p_ids, "chosen_ids": tokenizer.encode(c_text, add_special_tokens=False),
                         "rejected_ids": tokenizer.encode(r_text, add_special_tokens=False), "qid": qid, "docid": d})
            stats["pairs"] += 1
    return rows, stats


def _trainer_class():
    from trl import DPOTrainer

    class TokenizedDPOTrainer(DPOTrainer):
        """trl's ``DPOTrainer`` taking rows tokenized here (``prompt_ids``, ``chosen_ids``, ``rejected_ids``) as
        they are: trl would otherwise append an EOS token to every text completion."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dataset.column_names):
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return TokenizedDPOTrainer


def build_dpo_rows(student_dir: str | Path, data: RankingData, teacher_records: dict[str, dict], out: Path,
                   options: dict | None = None, dtype: str = "float32", seed: int = 0,
                   progress: bool = False) -> tuple[list[dict], dict]:
    """The DPO rows for the student in ``student_dir`` (pointwise or reasoning, by its metadata) with
    ``options`` (pointwise: ``pairs_per_query``, ``top_m``, ``queries``, ``anchors``; reasoning: ``samples``,
    ``temperature``, ``max_new_tokens``, ``per_query``, ``top_m``, ``queries``)."""
    from llmrank.recipe import REFINE_OPTIONS
    from llmrank.students import load_student

    options = dict(options or {})
    kind = student_meta(student_dir)[1].get("kind", "pointwise")
    allowed = set(REFINE_OPTIONS[("dpo", kind)])
    bad = sorted(set(options) - allowed)
    if bad:
        import difflib

        close = difflib.get_close_matches(bad[0], sorted(allowed), n=1, cutoff=0.6)
        raise LlmrankError(f"refine.options.{bad[0]}: not an option of DPO for a {kind} student"
                           + (f"; did you mean '{close[0]}'?" if close else "") + f" (options: {', '.join(sorted(allowed))})")
    model, tok, meta, base_path = start_model(student_dir, out, dtype)
    if kind == "pointwise":
        reranker = load_student(base_path, dtype=dtype)
        rows, stats = pointwise_pairs(data, teacher_records, reranker, tok, meta, progress=progress, **options)
    else:
        rows, stats = reasoning_pairs(data, teacher_records, model, tok, meta, seed=seed, progress=progress, **options)
    if not rows:
        raise LlmrankError(f"no DPO pairs: the distilled student agrees with the teacher everywhere it was asked ({stats})")
    return rows, stats


def train_dpo(student_dir: str | Path, rows: list[dict], args, lora: dict | None = None, dtype: str = "float32",
              resume: bool | str | None = None, info: dict | None = None, callbacks=None) -> Path:
    """Refine the student in ``student_dir`` with trl's ``DPOTrainer`` on tokenized ``rows`` (from
    :func:`build_dpo_rows`); ``args`` is a ``trl.DPOConfig``. Saves the refined student under
    ``args.output_dir`` and returns that folder."""
    import datasets

    out = Path(args.output_dir)
    model, tok, meta, base_path = start_model(student_dir, out, dtype)
    check_method("dpo", meta.get("kind", "pointwise"))
    keep = [{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in rows]
    trainer = _trainer_class()(model=model, args=args, train_dataset=datasets.Dataset.from_list(keep),
                               processing_class=tok, peft_config=lora_config(lora), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    if trainer.is_world_process_zero():
        save_refined(trainer, tok, meta, base_path, out, "dpo", {"pairs": len(rows), **(info or {})}, LOG_KEYS)
    trainer.accelerator.wait_for_everyone()
    return out
