"""TFDS builders without TensorFlow: every dataset builds into a tmp dir, reads back through
tfds.data_source, iterates with grain, and the iterator resumes exactly at a saved position."""

import json

import numpy as np
import pytest

from orchestra_jax.data import builders, sources
from orchestra_jax.data.builders import build_dataset, decode_example, load_split
from orchestra_jax.data.iterators import make_task_iterator


def test_tensorflow_is_not_installed():
    with pytest.raises(ImportError):
        import tensorflow  # noqa: F401


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
    """Tiny HLE (parquet, HF column layout) and GeneralThought (jsonl) files."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    d = tmp_path_factory.mktemp("manual")
    (d / "hle").mkdir()
    rows = [{"id": f"h{i}", "question": f"What is {i}+{i}?", "answer": str(2 * i),
             "answer_type": "exactMatch", "category": "Math",
             "image": "data:image/png;base64,xx" if i == 3 else ""} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows), d / "hle" / "test-00000-of-00001.parquet")
    (d / "gt").mkdir()
    with open(d / "gt" / "part0.jsonl", "w") as f:
        for i in range(7):
            f.write(json.dumps({"question_id": i, "question": f"q{i}",
                                "reference_answer": "" if i == 5 else f"a{i}",
                                "task": "math"}) + "\n")
    with open(d / "prefs.jsonl", "w") as f:
        f.write(json.dumps({"instruction": "Prefer local search.", "P": [0, 1, 0, 0, 0],
                            "split": "train", "tool_names": ["web", "local"]}) + "\n")
        f.write(json.dumps({"instruction": "Be cheap.", "P": [0, 0, 0, 1, 0],
                            "split": "eval", "tool_names": ["web", "local"]}) + "\n")
    return d


def _all(kind, data_dir, name, split):
    src = load_split(kind, data_dir=str(data_dir), name=name, split=split)
    return [decode_example(src[i]) for i in range(len(src))]


def test_every_builder_builds_and_reads_without_tf(tmp_path, manual, shared_data):
    dd = tmp_path / "tfds"
    tau2_tasks = json.loads((shared_data / "tau2/domains/airline/tasks.json").read_text())
    split_ids = json.loads((shared_data / "tau2/domains/airline/split_tasks.json").read_text())
    b = build_dataset("tau2", data_dir=str(dd), name="airline",
                      source=str(shared_data / "tau2/domains/airline/tasks.json"))
    got = {s: info.num_examples for s, info in b.info.splits.items()}
    assert sum(got.values()) == len(tau2_tasks)
    assert got["train"] == len(set(split_ids["train"]) & {t["id"] for t in tau2_tasks})
    ex = _all("tau2", dd, "airline", "train")
    by_id = {t["id"]: t for t in tau2_tasks}
    for e in ex:
        assert e["task"] == by_id[e["id"]]            # the full task survives the round trip
        assert e["domain"] == "airline" and "Reason for call" in e["text"]
        assert e["preference"] == [] and e["preference_instruction"] == ""

    b = build_dataset("frames", data_dir=str(dd), name="default",
                      source=str(shared_data / "frames/frames.jsonl"))
    assert b.info.splits["test"].num_examples == 824
    frames = _all("frames", dd, "default", "test")
    first = json.loads((shared_data / "frames/frames.jsonl").read_text().splitlines()[0])
    assert {e["id"]: e["answer"] for e in frames}[first["id"]] == first["answer"]

    # ToolScale format: a tasks.json in a domain folder (here: mock's tau2 tasks relabelled)
    ts = tmp_path / "toolscale_dom"
    ts.mkdir()
    mock = json.loads((shared_data / "tau2/domains/mock/tasks.json").read_text())
    (ts / "tasks.json").write_text(json.dumps(mock))
    build_dataset("toolscale", data_dir=str(dd), name="mock", source=str(ts))
    tsx = _all("toolscale", dd, "mock", "train")
    assert sorted(e["id"] for e in tsx) == sorted(f"toolscale_dom/{t['id']}" for t in mock)

    build_dataset("hle", data_dir=str(dd), name="default", manual_dir=str(manual / "hle"))
    hle = _all("hle", dd, "default", "test")
    assert sorted(e["id"] for e in hle) == ["h0", "h1", "h2", "h4", "h5"]   # image row dropped
    assert {e["id"]: e["answer"] for e in hle}["h4"] == "8"
    assert hle[0]["meta"]["category"] == "Math"

    build_dataset("general_thought", data_dir=str(dd), name="default",
                  manual_dir=str(manual / "gt"))
    gt = _all("general_thought", dd, "default", "train")
    assert sorted(e["id"] for e in gt) == ["0", "1", "2", "3", "4", "6"]   # empty answer dropped


def test_manual_datasets_say_what_to_download(tmp_path):
    with pytest.raises(sources.ManualDataError, match="huggingface.co/datasets/cais/hle"):
        build_dataset("hle", data_dir=str(tmp_path / "a"), name="default")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="GeneralThought-430K-filtered"):
        build_dataset("general_thought", data_dir=str(tmp_path / "b"), name="default",
                      manual_dir=str(empty))
    with pytest.raises(ValueError, match="unknown dataset kind"):
        build_dataset("nope", data_dir=str(tmp_path))


def test_preference_augmented_variants(tmp_path, manual, shared_data):
    dd = tmp_path / "tfds"
    frames = str(shared_data / "frames/frames.jsonl")
    # from a JSONL of pairs: test-split examples get the eval pairs only
    build_dataset("frames", data_dir=str(dd), name="pref_file", source=frames,
                  preferences=str(manual / "prefs.jsonl"))
    ex = _all("frames", dd, "pref_file", "test")
    assert {e["preference_instruction"] for e in ex} == {"Be cheap."}
    assert ex[0]["preference"] == [0, 0, 0, 1, 0] and ex[0]["preference_tools"] == ["web", "local"]

    # from a callable (the preference generator's API): deterministic per example id
    def sample(rng, tool_names):
        p = [rng.random() for _ in range(len(tool_names) + 3)]
        return f"weights {np.round(p, 2).tolist()}", p

    tools = ["search-1", "reasoner-1", "answer-1"]
    for name in ("pref_fn_a", "pref_fn_b"):
        build_dataset("tau2", data_dir=str(dd), name=name, preference_fn=sample, tool_names=tools,
                      source=str(shared_data / "tau2/domains/airline/tasks.json"))
    a = _all("tau2", dd, "pref_fn_a", "train")
    b = {e["id"]: e for e in _all("tau2", dd, "pref_fn_b", "train")}
    assert all(len(e["preference"]) == len(tools) + 3 for e in a)
    assert all(e["preference"] == pytest.approx(b[e["id"]]["preference"]) for e in a)
    assert len({tuple(e["preference"]) for e in a}) == len(a)   # not one vector for all

    # the preference generator's own sampler (returns a Preference; takes a split)
    from orchestra_jax.data.preferences import sample_preference
    build_dataset("tau2", data_dir=str(dd), name="pref_gen", preference_fn=sample_preference,
                  tool_names=tools, source=str(shared_data / "tau2/domains/airline/tasks.json"))
    gen = _all("tau2", dd, "pref_gen", "train")
    assert all(len(e["preference"]) == len(tools) + 3 for e in gen)
    assert len({e["preference_instruction"] for e in gen}) > 1

    def bad(rng, tool_names):
        return "x", [1.0]
    with pytest.raises(ValueError, match="expected 6"):
        build_dataset("tau2", data_dir=str(dd), name="pref_bad", preference_fn=bad,
                      tool_names=tools, source=str(shared_data / "tau2/domains/airline/tasks.json"))


def test_iterator_resumes_exactly(tmp_path, shared_data):
    dd = tmp_path / "tfds"
    build_dataset("frames", data_dir=str(dd), name="default",
                  source=str(shared_data / "frames/frames.jsonl"))
    src = load_split("frames", data_dir=str(dd), name="default", split="test")
    it = make_task_iterator(src, seed=7)
    head = [next(it)["id"] for _ in range(830)]          # crosses an epoch boundary (824)
    assert len(set(head[:824])) == 824                    # an epoch is a permutation
    assert head[:824] != sorted(head[:824])               # and shuffled
    state = json.loads(json.dumps(it.get_state()))        # JSON-able
    rest = [next(it)["id"] for _ in range(50)]

    again = make_task_iterator(src, seed=7)
    again.set_state(state)
    assert [next(again)["id"] for _ in range(50)] == rest
    fresh = make_task_iterator(src, seed=7)
    assert [next(fresh)["id"] for _ in range(830)] == head     # deterministic
    with pytest.raises(ValueError, match="does not match"):
        make_task_iterator(src, seed=8).set_state(state)
    one = make_task_iterator(list(range(5)), seed=0, num_epochs=1)
    assert sorted(one) == [0, 1, 2, 3, 4]
