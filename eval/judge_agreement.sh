#!/usr/bin/env bash
# Judge agreement of "From a corpus alone" (eval/README.md): the embedded SmolLM2-135M as UMBRELA judge of the
# first N queries x BM25 top 20 of SciFact test and of TREC DL19; Cohen's kappa against the human qrels and the
# system-order Kendall tau over the systems below (two of them controls: BM25's top 20 reversed and shuffled).
#   N=10 DATA=../shared/data RUN=runs/corpus-only-cpu QS=runs/quickstart-cpu/distill/merged OUT=runs/judge \
#       bash eval/judge_agreement.sh
# RUN: a finished corpus-only run given the quickstart student's row (--set eval.students.quickstart_student=…).
set -euo pipefail
N=${N:-10}; DATA=${DATA:-../shared/data}; RUN=${RUN:-runs/corpus-only-cpu}
QS=${QS:-runs/quickstart-cpu/distill/merged}; OUT=${OUT:-runs/judge}
mkdir -p "$OUT"
E=$RUN/eval/scifact-test
JUDGE=(--top-k 20 --dtype float32 --max-doc-tokens 128)
echo "== $(date -u +%T) SciFact systems"
python -m llmrank rerank "$DATA/scifact" --split test --queries "$N" --top-k 20 --method dense --model minilm-l6 \
  -o "$OUT/scifact_dense.trec" --overwrite
python -m eval.judge_systems controls "$E/first_stage.trec" --top-k 20 --out-prefix "$OUT/scifact_bm25"
echo "== $(date -u +%T) SciFact judge"
python -m llmrank judge "$DATA/scifact" --split test --queries "$N" "${JUDGE[@]}" -o "$OUT/scifact.qrels" \
  --run bm25="$E/first_stage.trec" --run teacher_fusion="$E/teacher.trec" --run dense_minilm="$OUT/scifact_dense.trec" \
  --run zero_shot="$E/student_before.trec" --run student_generated="$E/student.trec" \
  --run student_quickstart="$E/quickstart_student.trec" --run bm25_reversed="$OUT/scifact_bm25_reversed.trec" \
  --run bm25_shuffled="$OUT/scifact_bm25_shuffled.trec"
echo "== $(date -u +%T) DL19 systems"
DL=$DATA/trec-dl19/bm25_top100.json
python -m eval.judge_systems controls "$DATA/trec-dl19/bm25_top100.run" --top-k 20 --out-prefix "$OUT/dl19_bm25"
python -m llmrank rerank "$DL" --queries "$N" --top-k 20 --method dense --model minilm-l6 -o "$OUT/dl19_dense.trec" --overwrite
python -m llmrank rerank "$DL" --queries "$N" --top-k 20 --method pointwise --model smollm2-135m --prompt yes_no \
  --dtype float32 -o "$OUT/dl19_zero_shot.trec" --overwrite
python -m llmrank rerank "$DL" --queries "$N" --top-k 20 --method student --model "$QS" --dtype float32 \
  -o "$OUT/dl19_student_quickstart.trec" --overwrite
python -m llmrank rerank "$DL" --queries "$N" --top-k 20 --method student --model "$RUN/distill/merged" --dtype float32 \
  -o "$OUT/dl19_student_generated.trec" --overwrite
echo "== $(date -u +%T) DL19 judge"
python -m llmrank judge "$DL" --queries "$N" "${JUDGE[@]}" -o "$OUT/dl19.qrels" \
  --run bm25="$DATA/trec-dl19/bm25_top100.run" --run dense_minilm="$OUT/dl19_dense.trec" \
  --run zero_shot="$OUT/dl19_zero_shot.trec" --run student_quickstart="$OUT/dl19_student_quickstart.trec" \
  --run student_generated="$OUT/dl19_student_generated.trec" --run bm25_reversed="$OUT/dl19_bm25_reversed.trec" \
  --run bm25_shuffled="$OUT/dl19_bm25_shuffled.trec"
for f in scifact dl19; do
  python -m eval.judge_systems tau "$OUT/$f.agreement.json" --without bm25_reversed bm25_shuffled
done
echo "== $(date -u +%T) done"
