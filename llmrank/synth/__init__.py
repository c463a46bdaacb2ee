"""Training data from a corpus alone: queries written by an LLM for sampled documents (:mod:`.queries`,
InPars / Promptagator, with their likelihood and round-trip filters) and relevance labels judged by an LLM
(:mod:`.judge`, UMBRELA-style graded qrels, with agreement against human qrels). Both write append-only
JSONL that a rerun resumes (:mod:`.records`)."""
