"""The run report from eval rows and a trainer log written by hand: cost per query with the teacher-to-student
ratio, student–teacher agreement, the learning curve and the recipe's note; and the eval progress lines."""

from __future__ import annotations

import io
import json
import textwrap

import pytest

from llmrank.data import Candidates, write_run
from llmrank.eval.costs import cost_lines
from llmrank.eval.curve import quarters, read_log
from llmrank.progress import ProgressLines
from llmrank.eval.report import write_report
from llmrank.recipe import load_recipe
from llmrank.runner import Runner

TEACHER = {"q1": [("a", 0.9), ("b", 0.8), ("c", 0.7)], "q2": [("x", 3.0), ("y", 2.0), ("z", 1.0)]}
ROWS = {  # row -> (run, ndcg@10 vs qrels, seconds per query)
    "first_stage": ({"q1": [("c", 3.0), ("b", 2.0), ("a", 1.0)], "q2": [("x", 3.0), ("y", 2.0), ("z", 1.0)]}, 0.5, 0.001),
    "teacher": (TEACHER, 0.9, 0.02),
    "student_before": ({"q1": [("c", 3.0), ("b", 2.0), ("a", 1.0)], "q2": [("z", 3.0), ("y", 2.0), ("x", 1.0)]}, 0.3, 0.05),
    "student": ({"q1": [("a", 3.0), ("b", 2.0), ("c", 1.0)], "q2": [("y", 3.0), ("x", 2.0), ("z", 1.0)]}, 0.8, 0.05),
}


@pytest.fixture()
def run_dir(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: rep
        data: {{dataset: {tmp_path}}}
        distill: {{training: {{max_steps: 8}}}}
        eval:
          datasets: [{{dataset: {tmp_path}, name: ds}}]
          metrics: [ndcg@10]
          note: A CPU demo; see recipes/instruction-distill-7b.yaml for the GPU run.
        """))
    runner = Runner(load_recipe(recipe), tmp_path / "runs", progress=False)
    ev = runner.stage_dir("eval")
    for row, (run, ndcg, spq) in ROWS.items():
        write_run(Candidates(run), ev / "ds" / f"{row}.trec", tag=row)
        cost = {"seconds_per_query": spq, "calls_per_query": 0.0 if row == "first_stage" else 3.0}
        (ev / "ds" / f"{row}.json").write_text(json.dumps({
            "row": row, "queries": 2, "metrics": {"ndcg@10": ndcg}, "cost": cost,
            "per_query": {"q1": ndcg, "q2": ndcg}, "scores": {q: [s for _, s in items] for q, items in run.items()}}))
    (ev / "results.json").write_text(json.dumps({"ds": {}}))
    adapter = runner.stage_dir("distill") / "adapter"
    adapter.mkdir(parents=True)
    losses = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    (adapter / "trainer_log.json").write_text(json.dumps([{"step": i + 1, "loss": v} for i, v in enumerate(losses)]))
    (adapter / "training_info.json").write_text(json.dumps({
        "world_size": 2, "global_step": 8, "groups": 96, "per_device_train_batch_size": 3,
        "gradient_accumulation_steps": 2}))
    return runner


def test_report_has_costs_agreement_curve_and_note(run_dir):
    terminal = write_report(run_dir)
    report = (run_dir.root / "report.md").read_text()
    assert "**What this run shows.** A CPU demo; see recipes/instruction-distill-7b.yaml" in report
    # learning curve: quarters of 8 logged steps are 2 rows each: (1.0 + 0.9) / 2 and (0.4 + 0.3) / 2
    assert "mean 0.9500 over the first quarter" in report and "0.3500 over the last quarter" in report
    assert "(last/first = 0.37)" in report
    # 3 groups per device x 2 accumulation steps x 2 processes = 12 groups an optimizer step
    assert ("8 optimizer steps of 12 group(s) each (3 per device × 2 accumulation step(s) × 2 process(es)) "
            "over 96 training groups.") in report
    assert (run_dir.stage_dir("eval") / "learning-curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # costs: first stage 1 ms, teacher 20 ms, student 50 ms; the teacher is 2.5x cheaper than the student
    assert "Cost per query on this machine: first stage (BM25) 1 ms; teacher 20 ms (3 model calls); student, distilled 50 ms (3 model calls)." in report
    assert "Teacher-to-student cost ratio: 0.40× (this teacher is 2.5× cheaper than the student" in report
    # agreement: the distilled student is the teacher on q1 (tau 1) and swaps its top two on q2 (tau 1/3);
    # the zero-shot student reverses both (tau -1)
    assert "| student, zero-shot | -1.000 |" in report and "| student, distilled | 0.667 |" in report
    assert "| student, distilled | 0.667 | " in terminal and "| 0.8000 |" in terminal


def test_cost_ratio_reads_as_a_speed_up_when_the_teacher_is_dearer():
    rows = {"teacher": {"cost": {"seconds_per_query": 1.0, "calls_per_query": 20}},
            "student": {"cost": {"seconds_per_query": 0.25, "calls_per_query": 20}}}
    assert cost_lines(rows)[-1] == "Teacher-to-student cost ratio: 4.0× (the student ranks 4.0× faster than its teacher)."


def test_learning_curve_quarters_and_bad_log(tmp_path):
    assert quarters([{"step": 1, "loss": 2.0}]) is None
    q = quarters([{"step": s, "loss": v} for s, v in [(1, 4.0), (2, 2.0), (3, 1.0)]])  # a quarter of 3 rows is 1 row
    assert q["first_quarter"] == 4.0 and q["last_quarter"] == 1.0 and q["ratio"] == 0.25
    bad = tmp_path / "trainer_log.json"
    bad.write_text('[{"step": 1}]')
    from llmrank.errors import LlmrankError

    with pytest.raises(LlmrankError, match="trainer_log.json"):
        read_log(bad)
    assert read_log(tmp_path / "missing.json") == []


def test_progress_lines_first_periodic_and_last():
    now = [0.0]
    out = io.StringIO()
    lines = ProgressLines("[eval] ds: student", total=5, every_s=10, stream=out, clock=lambda: now[0])
    for t in (2.0, 4.0, 12.0, 14.0, 20.0):  # query 1 at 2 s, 2 at 4 s (skipped), 3 at 12 s, 4 skipped, 5 last
        now[0] = t
        lines()
    assert out.getvalue().splitlines() == [
        "[eval] ds: student: 1/5 queries, 2.0 s/query, about 8 s left",
        "[eval] ds: student: 3/5 queries, 4.0 s/query, about 8 s left",
        "[eval] ds: student: 5/5 queries, 4.0 s/query, done",
    ]


def test_report_of_the_student_row_alone(run_dir):
    # eval.baselines: [student] (e.g. comparing two training settings): no baseline to plot the deltas against
    ds = run_dir.stage_dir("eval") / "ds"
    for row in ("first_stage", "teacher", "student_before"):
        (ds / f"{row}.json").unlink()
        (ds / f"{row}.trec").unlink()
    terminal = write_report(run_dir)
    assert "| student, distilled |" in terminal and "| 0.8000 |" in terminal
    assert not (run_dir.stage_dir("eval") / "ds-ndcg-deltas.png").exists()
    assert (run_dir.stage_dir("eval") / "ds-scores.png").is_file()
