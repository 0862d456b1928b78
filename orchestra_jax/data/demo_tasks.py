"""The CPU demo's task family: questions where the right tool depends on the question.

Two kinds, generated deterministically from a seed:

* ``lookup`` — facts about fictional entities ("In which town was the Velmora Institute
  founded?"). They exist only in a generated corpus (one short document per entity), so the
  expert LLM answers them only after ``search`` put the document into its context.
* ``known`` — general knowledge a small instruct model has (capitals of large countries). The
  expert answers them directly; searching first costs more (an extra expert call, the search
  price and a longer context) and gains nothing.

So the best tool sequence depends on the question and on the user's preference P: under a
neutral P the policy should search exactly for lookups; a P that rewards ``local_search`` makes
searching everywhere best; a P that rewards low cost makes skipping it best where possible.

:func:`write_demo_data` writes ``corpus.jsonl`` (the search corpus: the fictional documents
plus the bundled mini corpus as distractors), ``train.jsonl`` and ``heldout.jsonl`` (QA rows
``{"id", "question", "answer", "kind"}``) into a directory.
"""
from __future__ import annotations

import json
import pathlib
import random
from typing import Sequence

_PREFIX = ("Vel", "Quor", "Tarsk", "Ombr", "Kest", "Lum", "Dray", "Fen", "Harv", "Ist", "Jorm",
           "Nax", "Pell", "Rund", "Sorv", "Thal", "Ulv", "Wex", "Yard", "Zem")
_SUFFIX = ("mora", "ith", "ane", "oria", "ewick", "ador", "unel", "ast", "emont", "ivar")
_KINDS = ("Institute", "Bridge", "Observatory", "Library", "Guild", "Academy")
_TOWNS = ("Quillby", "Marrow", "Stenfold", "Brackley", "Duneholm", "Ashcombe", "Pennick",
          "Harlow", "Wyvern", "Corrib", "Elstow", "Fintry")
_COLOURS = ("orange", "green", "purple", "yellow", "silver", "crimson", "blue", "white")

# (question, answer) pairs of general knowledge. Checked against SmolLM2-135M-Instruct (the demo
# expert): it answers each of these correctly without context.
KNOWN_FACTS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of England?", "London"),
    ("What is the capital of Russia?", "Moscow"),
    ("What is the capital of China?", "Beijing"),
)


def _entities(rng: random.Random, n: int) -> list[str]:
    names: set[str] = set()
    while len(names) < n:
        names.add(f"{rng.choice(_PREFIX)}{rng.choice(_SUFFIX)} {rng.choice(_KINDS)}")
    return sorted(names)


def lookup_tasks(seed: int, n: int) -> tuple[list[dict], list[dict]]:
    """(documents, tasks) for ``n`` fictional entities, one fact each."""
    rng = random.Random(seed)
    docs, tasks = [], []
    for i, ent in enumerate(_entities(rng, n)):
        # Two relations SmolLM2-135M reads reliably from a retrieved document (town 20/24,
        # colour 7/7 over search -> answer episodes); a third, "what animal is the mascot", was
        # dropped: the expert answered it 4/21 even with the right document in context.
        if rng.randrange(2) == 0:
            town = rng.choice(_TOWNS)
            text = f"The {ent} was founded in the town of {town} in {rng.randint(1700, 1950)}."
            q, a = f"In which town was the {ent} founded?", town
        else:
            colour = rng.choice(_COLOURS)
            text = f"The {ent} is painted {colour} and stands near the old market square."
            q, a = f"What colour is the {ent} painted?", colour
        slug = ent.lower().replace(" ", "_")
        docs.append({"id": f"demo-{i:03d}-{slug}", "title": f"The {ent}", "text": text})
        tasks.append({"id": f"lookup-{i:03d}", "question": q, "answer": a, "kind": "lookup"})
    return docs, tasks


def known_tasks() -> list[dict]:
    return [{"id": f"known-{i:03d}", "question": q, "answer": a, "kind": "known"}
            for i, (q, a) in enumerate(KNOWN_FACTS)]


def split(tasks: Sequence[dict], heldout_fraction: float, seed: int) -> tuple[list, list]:
    """Per kind, a seeded ``heldout_fraction`` of the tasks goes to the held-out split."""
    rng = random.Random(seed)
    train, held = [], []
    for kind in sorted({t["kind"] for t in tasks}):
        group = [t for t in tasks if t["kind"] == kind]
        rng.shuffle(group)
        k = max(1, round(heldout_fraction * len(group)))
        held += group[:k]
        train += group[k:]
    return train, held


def write_demo_data(out_dir: str | pathlib.Path, *, seed: int = 0, num_lookup: int = 24,
                    heldout_fraction: float = 0.35, distractors: str | pathlib.Path | None = None
                    ) -> dict[str, pathlib.Path]:
    """Writes corpus.jsonl, train.jsonl, heldout.jsonl; returns their paths."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs, lookups = lookup_tasks(seed, num_lookup)
    if distractors is None:
        distractors = (pathlib.Path(__file__).resolve().parents[1] / "tools" / "data" /
                       "mini_corpus.jsonl")
    extra = [json.loads(line) for line in pathlib.Path(distractors).read_text().splitlines()
             if line.strip()]
    train, held = split(lookups + known_tasks(), heldout_fraction, seed)
    paths = {"corpus": out / "corpus.jsonl", "train": out / "train.jsonl",
             "heldout": out / "heldout.jsonl"}
    for name, rows in (("corpus", docs + extra), ("train", train), ("heldout", held)):
        with open(paths[name], "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return paths
