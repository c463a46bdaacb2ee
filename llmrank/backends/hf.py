"""transformers backend: CPU or GPU, fp32/bf16, batched with length bucketing and dynamic padding.

Scoring runs the decoder to hidden states and applies the LM head to each prompt's LAST real position
only (one vocabulary row per prompt, not one per token). With ``prefix_reuse`` the token prefix shared by
every prompt of a call (the instruction and the query, when one query's documents are scored together)
is run once and its KV cache reused for each batch of suffixes.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import numpy as np
import torch

from llmrank.backends.base import Backend, Generation, GenerationParams, ScoreRequest, Timer, label_token_ids
from llmrank.errors import LlmrankError

log = logging.getLogger(__name__)

def resolve_dtype(dtype: str | torch.dtype, device: str | None = None) -> torch.dtype:
    """A torch dtype; ``auto`` is bf16 where the GPU or CPU computes it natively (:mod:`llmrank.backends.dtype`)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    from llmrank.backends.dtype import resolve

    try:
        return getattr(torch, resolve(dtype, device)[0])
    except ValueError as e:
        raise LlmrankError(str(e)) from None


def unwrap(model):
    """The transformers model inside a peft wrapper (LoRA layers stay injected), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def last_token_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, past_key_values=None,
                      token_ids: torch.Tensor | None = None, past_mask: torch.Tensor | None = None,
                      position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token logits at each row's last real position (right padding), as float32.

    Runs the decoder body, gathers one hidden state per row and applies the LM head to it alone; with
    ``token_ids`` only those vocabulary rows are computed (training needs just the label logits).
    Works on plain and peft-wrapped causal LMs; gradients flow when called outside ``no_grad``.
    ``past_mask`` (``[batch, past_len]``) marks the cached positions each row may see (rows whose cached
    prefixes differ in length are left-padded there), with ``position_ids`` continuing each row's prefix.
    """
    lm = unwrap(model)
    body = lm.get_decoder()
    past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
    mask = attention_mask
    if past_len:
        past = past_mask if past_mask is not None else attention_mask.new_ones(attention_mask.shape[0], past_len)
        mask = torch.cat([past.to(attention_mask.dtype), attention_mask], dim=1)
    kw = {"position_ids": position_ids} if position_ids is not None else {}
    out = body(input_ids=input_ids, attention_mask=mask, past_key_values=past_key_values,
               use_cache=past_key_values is not None, **kw)
    last = attention_mask.sum(dim=1) - 1
    hidden = out.last_hidden_state[torch.arange(input_ids.shape[0], device=input_ids.device), last]
    head = lm.get_output_embeddings()
    if token_ids is not None:
        logits = hidden @ head.weight[token_ids].T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[token_ids]
    else:
        logits = head(hidden)
    cap = getattr(lm.config, "final_logit_softcapping", None) or getattr(
        getattr(lm.config, "text_config", None), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float()


class HFBackend(Backend):
    name = "hf"

    def __init__(self, model: str, dtype: str = "float32", device: str | None = None, batch_size: int | None = None,
                 max_batch_tokens: int = 8192, prefix_reuse: bool = True, model_obj=None, tokenizer=None,
                 generate_batch_size: int | None = None, mix_requests: bool | None = None):
        super().__init__(model)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from llmrank.models import resolve_model

        path = resolve_model(model) if model_obj is None else model
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        from llmrank.backends.dtype import resolve

        if isinstance(dtype, torch.dtype):
            self.dtype, self.dtype_reason = dtype, None
        else:
            name, self.dtype_reason = resolve(dtype, self.device.type)
            self.dtype = getattr(torch, name)
        if self.dtype_reason:
            log.info("dtype auto -> %s (%s)", str(self.dtype).removeprefix("torch."), self.dtype_reason)
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.lm = model_obj if model_obj is not None else AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        if model_obj is not None:  # a model built by the caller keeps its own dtype
            self.dtype = next(model_obj.parameters()).dtype
        self.lm.to(self.device).eval()
        # small batches win on CPU (measured: bf16 SmolLM2, batch 4 + prefix reuse 6.7 pairs/s vs 5.0 at 16)
        self.batch_size = batch_size or (16 if self.device.type == "cuda" else 4)
        # generation is bound by the number of decoding steps on CPU, so wider batches win there (measured,
        # bf16 SmolLM2, 1 thread, 32 new tokens: 37 tokens/s at batch 4, 65 at batch 8)
        self.generate_batch_size = generate_batch_size or batch_size or 16
        self.max_batch_tokens = max_batch_tokens
        self.prefix_reuse = prefix_reuse
        # rows of different requests (queries) share batches: on by default on a GPU, where small requests
        # (pairwise comparisons, setwise sets) would leave it idle. Off on CPU, where batches of one request are
        # already efficient and each query's numbers then do not depend on the queries in flight with it
        self.mix_requests = self.device.type == "cuda" if mix_requests is None else mix_requests
        # queries kept in flight by rerank_all: enough requests per wave to fill batches (see run_requests)
        self.default_in_flight = 64 if self.device.type == "cuda" else 8
        self.max_length = getattr(self.tokenizer, "model_max_length", None) or 2048
        cfg_max = getattr(unwrap(self.lm).config, "max_position_embeddings", None)
        if cfg_max and (self.max_length > 10**8 or cfg_max < self.max_length):
            self.max_length = cfg_max

    # -- scoring ---------------------------------------------------------------------------------------
    def encode(self, prompts: list[str]) -> list[list[int]]:
        return [self.tokenizer.encode(p, add_special_tokens=False) for p in prompts]

    def _batches(self, lengths: list[int], keys: list | None = None, size: int | None = None):
        """Indices grouped into batches of similar length (longest first) within the token budget; with
        ``keys``, only indices of equal key share a batch; ``size`` (default ``batch_size``) prompts at most."""
        order = sorted(range(len(lengths)), key=lambda i: (keys[i] if keys else 0, -lengths[i]))
        size = size or self.batch_size
        batch: list[int] = []
        for i in order:
            longest = lengths[batch[0]] if batch else lengths[i]
            if batch and (len(batch) >= size or longest * (len(batch) + 1) > self.max_batch_tokens
                          or (keys and keys[i] != keys[batch[0]])):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    def _pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        return ids.to(self.device), mask.to(self.device)

    @staticmethod
    def _common_prefix(seqs: list[list[int]]) -> int:
        n = min(len(s) for s in seqs) - 1  # keep at least one token of each suffix
        first = seqs[0]
        for s in seqs[1:]:
            k = 0
            while k < n and s[k] == first[k]:
                k += 1
            n = k
        return max(n, 0)

    def next_token_logprobs(self, ids: list[list[int]], token_ids: list[int] | None = None) -> torch.Tensor:
        """``[N, V]`` (or ``[N, len(token_ids)]``) log-softmax of the next token after each sequence."""
        (out,), (cost,) = self._score_groups([ids], token_ids)
        self.stats.update(cost)
        return out

    @torch.inference_mode()
    def _score_groups(self, groups: list[list[list[int]]], token_ids: list[int] | None = None
                      ) -> tuple[list[torch.Tensor], list[Counter]]:
        """Next-token log-softmax for several groups of sequences (one group: one request of one query).

        With ``prefix_reuse`` each group's shared token prefix (instruction + query) is run once and its KV
        cache reused; batches are formed over the suffixes of ALL groups by length (rows of different
        groups, with prefixes of different lengths, share a batch: their cached prefixes are left-padded and
        masked, and positions continue each row's own prefix) when ``mix_requests``; a group of at least
        ``batch_size`` sequences is always batched on its own, so its numbers do not depend on the other groups. Returns per group the ``[n, V or
        len(token_ids)]`` rows and its cost: ``calls``, ``prompt_tokens``, ``prefix_tokens_saved`` exactly,
        ``seconds`` shared by the tokens each group computed.
        """
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        lm = unwrap(self.lm)
        width = len(token_ids) if token_ids is not None else lm.get_output_embeddings().weight.shape[0]
        sel = torch.tensor(token_ids, device=self.device) if token_ids is not None else None
        outs = [torch.empty((len(g), width)) for g in groups]
        costs = [Counter(calls=len(g), prompt_tokens=sum(len(s) for s in g)) for g in groups]
        if not any(groups):
            return outs, costs
        t0 = time.perf_counter()
        prefix_len, prefix_kv = [], []
        for gi, g in enumerate(groups):
            p = self._common_prefix(g) if self.prefix_reuse and len(g) > 1 else 0
            kv = None
            if p >= 8:
                cache = DynamicCache()
                lm.get_decoder()(input_ids=torch.tensor([g[0][:p]], device=self.device), past_key_values=cache, use_cache=True)
                kv = [(layer.keys, layer.values) for layer in cache.layers]
                costs[gi]["prefix_tokens_saved"] += p * (len(g) - 1)
            else:
                p = 0
            prefix_len.append(p)
            prefix_kv.append(kv)
        rows = [(gi, r) for gi, g in enumerate(groups) for r in range(len(g))]
        # a sliding-window model masks by cache index: rows are batched only with rows of equal prefix length
        sliding = getattr(lm.config, "sliding_window", None) or getattr(getattr(lm.config, "text_config", None), "sliding_window", None)
        # a request that fills batches by itself is batched alone, so its scores do not depend on which other
        # queries are in flight (a resumed teacher run writes the same numbers); smaller requests (a pairwise
        # comparison, a setwise set) share batches when ``mix_requests``
        keys = [(gi if len(groups[gi]) >= self.batch_size or not self.mix_requests else -1, prefix_len[gi] if sliding else 0)
                for gi, _ in rows]
        for batch in self._batches([len(groups[gi][r]) - prefix_len[gi] for gi, r in rows], keys):
            brows = [rows[i] for i in batch]
            input_ids, mask = self._pad([groups[gi][r][prefix_len[gi]:] for gi, r in brows])
            ps = [prefix_len[gi] for gi, _ in brows]
            P = max(ps)
            cache = past_mask = position_ids = None
            if P:
                first = next(gi for gi, _ in brows if prefix_kv[gi] is not None)
                same = all(gi == first for gi, _ in brows)
                layers = []
                for li, (k0, v0) in enumerate(prefix_kv[first]):
                    if same:  # one request's rows: a view of its prefix, no copy (the cache update copies once)
                        layers.append((k0.expand(len(brows), -1, -1, -1), v0.expand(len(brows), -1, -1, -1)))
                        continue
                    ks = k0.new_zeros((len(brows), k0.shape[1], P, k0.shape[3]))
                    vs = v0.new_zeros((len(brows), v0.shape[1], P, v0.shape[3]))
                    for r, ((gi, _), p) in enumerate(zip(brows, ps)):
                        if p:  # left-padded: the prefix ends where the row's suffix starts
                            ks[r, :, P - p:] = prefix_kv[gi][li][0][0]
                            vs[r, :, P - p:] = prefix_kv[gi][li][1][0]
                    layers.append((ks, vs))
                cache = DynamicCache()
                for k, v in layers:  # filled directly: DynamicCache(ddp_cache_data=…) would copy every layer once more
                    layer = DynamicLayer()
                    layer.lazy_initialization(k, v)
                    layer.keys, layer.values = k, v
                    cache.layers.append(layer)
                if min(ps) < P:
                    past_mask = torch.zeros((len(brows), P), dtype=torch.long, device=self.device)
                    for r, p in enumerate(ps):
                        past_mask[r, P - p:] = 1
                    position_ids = (torch.tensor(ps, device=self.device)[:, None]
                                    + torch.arange(input_ids.shape[1], device=self.device)[None, :])
            logits = last_token_logits(self.lm, input_ids, mask, cache, past_mask=past_mask, position_ids=position_ids)
            logp = torch.log_softmax(logits, dim=-1)
            logp = (logp[:, sel] if sel is not None else logp).cpu()
            for t, (gi, r) in enumerate(brows):
                outs[gi][r] = logp[t]
        seconds = time.perf_counter() - t0
        computed = [sum(len(s) for s in g) - prefix_len[gi] * (len(g) - 1) for gi, g in enumerate(groups)]
        for c, n in zip(costs, computed):
            c["seconds"] = seconds * n / max(1, sum(computed))
        return outs, costs

    def _label_columns(self, labels: list[str], variants: bool) -> tuple[list[list[int]], list[int]]:
        groups = [label_token_ids(self.tokenizer, lab, variants) for lab in labels]
        return groups, [t for g in groups for t in g]

    @staticmethod
    def _fold_labels(lp: torch.Tensor, groups: list[list[int]]) -> np.ndarray:
        cols, start = [], 0
        for g in groups:
            cols.append(torch.logsumexp(lp[:, start : start + len(g)], dim=1))
            start += len(g)
        return torch.stack(cols, dim=1).double().numpy()

    def label_logprobs(self, prompts: list[str], labels: list[str], variants: bool = True) -> np.ndarray:
        groups, flat = self._label_columns(labels, variants)
        ids = self.encode(prompts)
        self.last_prompt_tokens = [len(s) for s in ids]
        return self._fold_labels(self.next_token_logprobs(ids, flat), groups)

    def run_requests(self, requests: list) -> list[tuple[object, Counter]]:
        """Score requests: one :meth:`_score_groups` pass per label set, batches mixing the requests,
        prefix KV reuse per request; generation requests: as the base class (one ``generate`` call)."""
        out: list = [None] * len(requests)
        by_labels: dict[tuple, list[int]] = {}
        rest = []
        for i, r in enumerate(requests):
            if isinstance(r, ScoreRequest):
                by_labels.setdefault(r.bucket(), []).append(i)
            else:
                rest.append(i)
        for idx in by_labels.values():
            groups, flat = self._label_columns(requests[idx[0]].labels, requests[idx[0]].variants)
            lps, costs = self._score_groups([self.encode(requests[i].prompts) for i in idx], flat)
            for i, lp, c in zip(idx, lps, costs):
                self.stats.update(c)
                out[i] = (self._fold_labels(lp, groups), +c)
        if rest:
            for i, ans in zip(rest, super().run_requests([requests[i] for i in rest])):
                out[i] = ans
        return out

    # -- generation ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: list[str], params: GenerationParams | None = None) -> list[Generation]:
        params = params or GenerationParams()
        tok = self.tokenizer
        results: list[Generation | None] = [None] * len(prompts)
        ids = self.encode(prompts)
        with Timer(self.stats):
            for batch in self._batches([len(s) for s in ids], size=self.generate_batch_size):
                width = max(len(ids[i]) for i in batch)
                input_ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
                mask = torch.zeros_like(input_ids)
                for r, i in enumerate(batch):  # left padding for generation
                    input_ids[r, width - len(ids[i]):] = torch.tensor(ids[i])
                    mask[r, width - len(ids[i]):] = 1
                kwargs = dict(max_new_tokens=params.max_tokens, pad_token_id=tok.pad_token_id)
                if params.temperature > 0:
                    torch.manual_seed(params.seed)
                    kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
                else:
                    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                gen = self.lm.generate(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
                for r, i in enumerate(batch):
                    new = gen[r, width:].tolist()
                    if tok.eos_token_id in new:
                        new = new[: new.index(tok.eos_token_id)]
                    text = tok.decode(new, skip_special_tokens=True)
                    for s in params.stop or []:
                        if s in text:
                            text = text[: text.index(s)]
                    results[i] = Generation(text, len(ids[i]), len(new))
                    self.stats["calls"] += 1
                    self.stats["prompt_tokens"] += len(ids[i])
                    self.stats["completion_tokens"] += len(new)
        return results  # type: ignore[return-value]
