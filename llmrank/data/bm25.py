"""First stage: BM25 with bm25s (Lucene variant, k1=1.5, b=0.75, English stopwords, Snowball stemmer).

The index is built once per corpus and parameters and cached under ``<cache>/bm25/<key>`` (the key hashes
the documents' ids and text and the parameters), so a second retrieval on the same corpus only loads it.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from llmrank.cache import cache_root, corpus_key, discard, publish, seal, verify
from llmrank.data.types import Candidates, Doc, Query, RankingData
from llmrank.errors import LlmrankError
from llmrank.outputs import temp_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BM25Config:
    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    stemmer: str = "english"
    stopwords: str = "en"


class BM25Index:
    """A bm25s index over a corpus with its doc id order."""

    def __init__(self, docs: dict[str, Doc], cfg: BM25Config = BM25Config(), cache_dir: str | Path | None = None,
                 show_progress: bool = False):
        import bm25s
        import Stemmer

        # bm25s pins its own logger at DEBUG, which prints "DEBUG bm25s: ..." lines on every index build;
        # let it follow the application's level instead (-v shows INFO, never DEBUG).
        logging.getLogger("bm25s").setLevel(logging.NOTSET)
        if not docs:
            raise LlmrankError("BM25 needs documents, and this dataset has none (a candidates file or BRIGHT examples "
                               "without their documents); give a dataset with a corpus, or candidates")
        self.cfg = cfg
        self._stemmer = Stemmer.Stemmer(cfg.stemmer)
        self._progress = show_progress
        root = Path(cache_dir) if cache_dir else cache_root() / "bm25"
        path = root / corpus_key(docs, asdict(cfg))
        self.cache_path = path
        if path.exists():
            problem = verify(path)
            if problem is None:
                try:
                    retriever = bm25s.BM25.load(str(path))
                    docids = json.loads((path / "docids.json").read_text(encoding="utf-8"))
                    if len(docids) != len(docs):
                        raise ValueError(f"{len(docids)} doc ids for a corpus of {len(docs)}")
                except Exception as e:  # damaged in a way the sizes and hashes did not show
                    problem = f"{type(e).__name__}: {e}"
                else:
                    self.retriever, self.docids, self.cached = retriever, docids, True
                    return
            log.warning("BM25 cache %s is damaged or incomplete (%s); rebuilding it", path, problem)
            discard(path)
        self.docids = list(docs)
        tokens = bm25s.tokenize([docs[d].contents for d in self.docids], stopwords=cfg.stopwords,
                                stemmer=self._stemmer, show_progress=show_progress)
        self.retriever = bm25s.BM25(k1=cfg.k1, b=cfg.b, method=cfg.method)
        self.retriever.index(tokens, show_progress=show_progress)
        # each builder writes its own folder and renames it into place: concurrent builders never share one
        tmp = temp_dir(path)
        try:
            self.retriever.save(str(tmp), show_progress=False)
            (tmp / "docids.json").write_text(json.dumps(self.docids), encoding="utf-8")
            seal(tmp)
            publish(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.cached = False

    def search(self, queries: list[Query], k: int = 100) -> Candidates:
        import bm25s

        k = min(k, len(self.docids))
        tokens = bm25s.tokenize([q.text for q in queries], stopwords=self.cfg.stopwords, stemmer=self._stemmer,
                                show_progress=False)
        idx, scores = self.retriever.retrieve(tokens, k=k, show_progress=self._progress)
        return Candidates({
            q.qid: [(self.docids[i], float(s)) for i, s in zip(idx[n], scores[n])] for n, q in enumerate(queries)
        })


def retrieve(data: RankingData, k: int = 100, cfg: BM25Config = BM25Config(), show_progress: bool = False) -> Candidates:
    """BM25 top-``k`` for every query of ``data``, without the query's excluded ids (BRIGHT)."""
    index = BM25Index(data.docs, cfg, show_progress=show_progress)
    extra = max((len(v) for v in data.excluded.values()), default=0)
    run = index.search(list(data.queries.values()), k + extra)
    return run.without(data.excluded).top(k)


def ensure_candidates(data: RankingData, k: int = 100, show_progress: bool = False) -> Candidates:
    """The data's own candidates when it has them, else BM25 top-``k``."""
    if data.candidates is not None:
        return data.candidates.without(data.excluded)
    data.candidates = retrieve(data, k, show_progress=show_progress)
    return data.candidates
