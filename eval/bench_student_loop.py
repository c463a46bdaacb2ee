"""Full fine-tuning vs LoRA for the pointwise student: held-out nDCG@10 against training steps (benchmark).

Trains SmolLM2-135M as the quickstart's pointwise student (same groups, collator, prompt, truncation and
combined RankNet + label cross-entropy loss as ``llmrank run recipes/quickstart-cpu.yaml``) in a plain
PyTorch loop (AdamW, linear warmup and decay, gradient clipping at 1.0, batch of ``--batch`` groups), and
scores the first ``--eval-queries`` SciFact test queries (BM25 top-20, bf16) every ``--eval-every`` steps,
so that the modes (``full``: every layer, embeddings frozen; ``lora-top``: LoRA r16 on layers 20-29;
``lora-all``) can be compared by quality against steps and seconds. Writes ``--out`` (JSON: the evals,
every step's loss, seconds per step).

    python -m eval.bench_student_loop --teacher runs/quickstart-cpu/teach/teacher.jsonl --mode full \
        --lr 5e-5 --epochs 2 --eval-every 49 --out runs/bench-student-full.json
"""
import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmrank.data import load_dataset
from llmrank.data.bm25 import ensure_candidates
from llmrank.eval.metrics import evaluate
from llmrank.losses import build_loss
from llmrank.models import resolve_model
from llmrank.prompts import load_prompt
from llmrank.rerankers.pointwise import build_pointwise_prompt
from llmrank.students.pointwise import GroupCollator, answer_token_ids
from llmrank.teacher import read_teacher_run
from llmrank.students.examples import build_groups

REPO = Path(__file__).resolve().parents[1]

ap = argparse.ArgumentParser()
ap.add_argument("--teacher", required=True, help="a teach stage's teacher.jsonl")
ap.add_argument("--dataset", default=str(REPO.parent / "shared" / "data" / "scifact"))
ap.add_argument("--mode", default="full")  # full | lora-top | lora-all
ap.add_argument("--lr", type=float, default=5e-5)
ap.add_argument("--epochs", type=float, default=2)
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--group", type=int, default=6)
ap.add_argument("--doc", type=int, default=64)
ap.add_argument("--eval-every", type=int, default=49)
ap.add_argument("--eval-queries", type=int, default=20)
ap.add_argument("--loss", default="combined")
ap.add_argument("--w-label", type=float, default=1.0)
ap.add_argument("--w-rank", type=float, default=1.0)
ap.add_argument("--warmup", type=int, default=4)
ap.add_argument("--bf16", action="store_true")
ap.add_argument("--prompt", default="yes_no")
ap.add_argument("--freeze-below", type=int, default=0)
ap.add_argument("--out", default="runs/bench-student-loop.json")
ap.add_argument("--max-steps", type=int, default=0)
ap.add_argument("--no-eval", action="store_true")
a = ap.parse_args()
torch.manual_seed(0)
random.seed(0)
D = a.dataset
prompt = load_prompt(a.prompt)
path = resolve_model("smollm2-135m")
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
if a.mode == "full":
    from llmrank.students.base import freeze_embeddings

    freeze_embeddings(model)  # as distill.finetune: full does
    for n, p in model.named_parameters():
        if any(f"layers.{i}." in n for i in range(a.freeze_below)):
            p.requires_grad = False
else:
    from peft import LoraConfig, get_peft_model
    tm = ('.*layers\\.(2[0-9])\\.(self_attn|mlp)\\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)'
          if a.mode == "lora-top" else "all-linear")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=tm, task_type="CAUSAL_LM"))
params = [p for p in model.parameters() if p.requires_grad]
print("trainable", sum(p.numel() for p in params), flush=True)

train = load_dataset(D, "train")
teacher = read_teacher_run(a.teacher)
groups = build_groups(train, teacher, a.group, seed=0)
coll = GroupCollator(tok, prompt, a.doc, a.group)
if a.loss == "combined":
    loss_fn = build_loss("combined", weights={"ranknet": a.w_rank, "label_ce": a.w_label})
else:
    loss_fn = build_loss(a.loss)
yes, no = answer_token_ids(tok, prompt)
ans = torch.tensor([yes, no])

test = load_dataset(D, "test").first_queries(a.eval_queries)
cands = ensure_candidates(test, 100).subset(test.queries).top(20)


def scores_of(ids, att):
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
        out = model(input_ids=ids, attention_mask=att, position_ids=pos, logits_to_keep=1, use_cache=False)
    lg = out.logits[:, -1, :].float()[:, ans]
    return lg[:, 0] - lg[:, 1]


@torch.no_grad()
def ndcg():
    model.eval()
    run = {}
    for q in cands.qids():
        docids = cands.docids(q)
        seqs = [tok.encode(build_pointwise_prompt(prompt, tok, test.queries[q].text, test.docs[d].contents, a.doc)[0],
                           add_special_tokens=False) for d in docids]
        w = max(map(len, seqs))
        ids = torch.full((len(seqs), w), tok.pad_token_id or 0)
        att = torch.zeros((len(seqs), w), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, w - len(s):] = torch.tensor(s)
            att[i, w - len(s):] = 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sc = scores_of(ids, att)
        run[q] = sorted(((d, float(s)) for d, s in zip(docids, sc)), key=lambda x: -x[1])
    model.train()
    from llmrank.data.types import Candidates
    return evaluate(Candidates(run), test.qrels, ["ndcg@10"])["ndcg@10"]


opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
steps = a.max_steps or math.ceil(len(groups) * a.epochs / a.batch)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, a.warmup)) * max(0.0, 1 - s / steps))
log = {"args": vars(a), "evals": [], "loss": []}
t0 = time.time()
if not a.no_eval:
    log["evals"].append((0, ndcg(), time.time() - t0))
    print("eval", log["evals"][-1], flush=True)
rng = random.Random(0)
order = []
model.train()
tt = time.time()
for step in range(steps):
    if len(order) < a.batch:
        perm = list(range(len(groups)))
        rng.shuffle(perm)
        order += perm
    batch = [groups[i] for i in order[:a.batch]]
    order = order[a.batch:]
    inp = coll(batch)
    sc = scores_of(inp["input_ids"], inp["attention_mask"]).view(inp["group_mask"].shape)
    loss = loss_fn(sc.float(), teacher_scores=inp["teacher_scores"], teacher_ranks=inp["teacher_ranks"],
                   labels=inp["labels_graded"], mask=inp["group_mask"])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step(); sched.step(); opt.zero_grad()
    log["loss"].append(float(loss.detach()))
    if (step + 1) % 10 == 0 or a.no_eval:
        print(f"step {step+1}/{steps} loss(last10) {sum(log['loss'][-10:])/10:.3f} {(time.time()-tt)/(step+1):.2f}s/step", flush=True)
    if not a.no_eval and ((step + 1) % a.eval_every == 0 or step + 1 == steps):
        log["evals"].append((step + 1, ndcg(), time.time() - t0))
        print("eval", log["evals"][-1], flush=True)
log["train_s_per_step"] = (time.time() - tt) / steps
Path(a.out).parent.mkdir(parents=True, exist_ok=True)
Path(a.out).write_text(json.dumps(log))
q = max(1, len(log["loss"]) // 4)
print("loss, mean of the first / last quarter of steps:", sum(log["loss"][:q]) / q, sum(log["loss"][-q:]) / q)
