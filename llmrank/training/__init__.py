"""What students share: training examples from teacher runs (:mod:`llmrank.training.examples`) and, on top
of any student kind, refinement. The students themselves live in :mod:`llmrank.students`."""
