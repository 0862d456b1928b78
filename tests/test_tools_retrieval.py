"""Local FAISS search over the bundled corpus with the offline MiniLM embedder."""

import pytest

from orchestra_jax.tools.retrieval import BUNDLED_CORPUS, LocalSearchIndex, read_corpus

# Paraphrased questions (no copied sentences) -> the title of the document that answers them.
QUERIES = {
    "which scientist got Nobel prizes in both physics and chemistry": "Marie Curie",
    "tallest peak on the planet and who first climbed it": "Mount Everest",
    "how do green plants turn sunlight into sugar": "Photosynthesis",
    "organelle that makes the cell's energy currency": "Mitochondrion",
    "who found the mould that kills bacteria in 1928": "Penicillin",
    "first people to walk on the lunar surface": "Moon landing",
    "biggest animal that ever existed, eats krill": "Blue whale",
    "why was Canberra picked as the nation's seat of government": "Canberra",
    "ship that hit an iceberg on its first trip across the Atlantic": "Titanic",
    "neural network architecture built on self-attention from 2017": "Transformer (deep learning)",
    "what year did the barrier splitting Berlin come down": "Berlin Wall",
    "hormone from the pancreas that controls blood sugar": "Insulin",
    "who created the web while at CERN": "World Wide Web",
    "algorithm that halves a sorted list each step": "Binary search",
}


@pytest.fixture(scope="module")
def index():
    return LocalSearchIndex.build(BUNDLED_CORPUS)


def test_bundled_corpus_is_well_formed():
    rows = read_corpus(BUNDLED_CORPUS)
    assert 50 <= len(rows) <= 100
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(r["title"] and len(r["text"]) > 40 for r in rows)


def test_relevant_doc_ranks_first(index):
    misses = []
    for (q, title), hits in zip(QUERIES.items(), index.search_batch(list(QUERIES), k=3)):
        assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
        if hits[0].title != title:
            misses.append((q, title, [h.title for h in hits]))
    # >= 10 must be exact top-1 hits (acceptance); we expect all of them.
    assert len(QUERIES) - len(misses) >= 10, misses
    assert not misses, misses


def test_save_load_identical(index, tmp_path):
    index.save(tmp_path / "idx")
    loaded = LocalSearchIndex.load(tmp_path / "idx")
    assert len(loaded) == len(index)
    qs = list(QUERIES)[:5]
    for a, b in zip(index.search_batch(qs, 5), loaded.search_batch(qs, 5)):
        assert [d.id for d in a] == [d.id for d in b]
        assert [d.score for d in a] == pytest.approx([d.score for d in b], abs=1e-6)


def test_bad_inputs(index, tmp_path):
    with pytest.raises(ValueError, match="k must be"):
        index.search("x", k=0)
    assert len(index.search("", k=2)) == 2  # empty query: still an answer, never a crash
    with pytest.raises(ValueError, match="duplicate id"):
        LocalSearchIndex.build([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])
    with pytest.raises(ValueError, match="needs keys"):
        LocalSearchIndex.build([{"title": "no id"}])
    with pytest.raises(FileNotFoundError, match="not a saved LocalSearchIndex"):
        LocalSearchIndex.load(tmp_path)
    assert index.count_tokens("hello world") == 2
