"""TFDS dataset builders that need no TensorFlow.

Every builder writes ``array_record`` files (``tfds``'s default ``tfrecord`` writer needs TF) and
is read back with ``tfds.data_source`` / ``builder.as_data_source`` (random access, no TF) and
iterated with grain (:mod:`orchestra_jax.data.iterators`). Never use ``tfds.load`` /
``as_dataset`` / ``tfds.as_numpy``: they need TensorFlow.

| builder (tfds name)             | source                                    | splits        |
|---------------------------------|-------------------------------------------|---------------|
| ``oj_tau2_tasks/<config>``      | a τ² ``tasks.json`` (+ split_tasks.json)   | as the file; else test |
| ``oj_toolscale_tasks/<config>`` | synthesized folder / tasks.json / .jsonl   | train         |
| ``oj_frames/<config>``          | ``frames.jsonl``                           | test          |
| ``oj_hle/<config>``             | ``manual_dir`` (gated; see ``HLE_HELP``)   | test (text-only) |
| ``oj_general_thought/<config>`` | ``manual_dir`` (see ``GENERAL_THOUGHT_HELP``) | train      |

Preference-augmented variants (paper §3.3 / App. F): give a config ``preferences`` (a JSONL of
``{"instruction", "P", "split"}`` pairs) or pass ``preference_fn(rng: random.Random, tool_names
[, split]) -> (instruction, P)`` (or an object with ``.instruction``/``.vector``) to the builder,
e.g. ``orchestra_jax.data.preferences.sample_preference``;
train-split examples draw from the train pairs, test-split examples from the eval pairs, each
example's pair fixed by a hash of (its id, ``preference_seed``).

Every example has ``id``, ``text`` (the task instruction / question), ``answer`` (QA; '' for
tasks), ``task_json`` (the full τ² task; '' for QA), ``domain``, ``meta_json``, and
``preference_instruction`` / ``preference`` (float32 [T+3]; '' / [] when not augmented) /
``preference_tools_json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import random
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

from orchestra_jax.data import sources

__all__ = ["DataConfig", "OjTau2Tasks", "OjToolscaleTasks", "OjFrames", "OjHle",
           "OjGeneralThought", "BUILDERS", "build_dataset", "load_split", "decode_example"]

FILE_FORMAT = "array_record"
# fn(rng: random.Random, tool_names[, split="train"|"test"]) -> (instruction, P) or an object
# with .instruction / .vector (orchestra_jax.data.preferences.sample_preference fits).
PreferenceFn = Callable[..., Any]


@dataclasses.dataclass
class DataConfig(tfds.core.BuilderConfig):
    """``source``: file/dir for task/FRAMES builders; ``domain``: label for task datasets;
    ``preferences``: JSONL of preference pairs; ``tool_names``: the tools a ``preference_fn``
    sees; ``preference_seed``: fixes the pair chosen per example."""

    source: str = ""
    domain: str = ""
    preferences: str = ""
    tool_names: tuple = ()
    preference_seed: int = 0


def _stable_int(*parts: Any) -> int:
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little")


class _Base(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "first version"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = None

    def __init__(self, *, preference_fn: Optional[PreferenceFn] = None, **kwargs):
        kwargs.setdefault("file_format", FILE_FORMAT)
        self._preference_fn = preference_fn
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__,
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(), "domain": tfds.features.Text(),
                "text": tfds.features.Text(), "answer": tfds.features.Text(),
                "task_json": tfds.features.Text(), "meta_json": tfds.features.Text(),
                "preference_instruction": tfds.features.Text(),
                "preference": tfds.features.Tensor(shape=(None,), dtype=np.float32),
                "preference_tools_json": tfds.features.Text()}))

    # -- subclasses: yield (split, raw example dict) ----------------------------------------
    def _raw(self, dl_manager) -> Iterator[tuple[str, dict]]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        by_split: dict[str, list] = {}
        for split, ex in self._raw(dl_manager):
            by_split.setdefault(split, []).append(ex)
        if not by_split:
            raise ValueError(f"{self.name}: the source produced no examples")
        pairs = self._pairs()
        return {s: self._generate_examples(exs, s, pairs) for s, exs in by_split.items()}

    def _pairs(self) -> Optional[dict]:
        cfg = self.builder_config
        if cfg is not None and cfg.preferences:
            return sources.read_preference_pairs(cfg.preferences)
        return None

    def _preference(self, ex_id: str, split: str, pairs: Optional[dict]):
        cfg = self.builder_config
        seed = cfg.preference_seed if cfg is not None else 0
        if pairs is not None:
            pool = pairs["train" if split == "train" else "eval"]
            if not pool:
                raise ValueError(f"{cfg.preferences}: no preference pairs for the "
                                 f"{'train' if split == 'train' else 'eval'} split")
            p = pool[_stable_int(ex_id, seed) % len(pool)]
            return p["instruction"], p["P"], p["tool_names"]
        if self._preference_fn is not None:
            tools = list(cfg.tool_names) if cfg is not None else []
            if not tools:
                raise ValueError("preference_fn given but the config has no tool_names")
            rng = random.Random(_stable_int(ex_id, seed, split))
            fn = self._preference_fn
            try:
                takes_split = "split" in inspect.signature(fn).parameters
            except (TypeError, ValueError):
                takes_split = False
            out = (fn(rng, tools, split="train" if split == "train" else "test")
                   if takes_split else fn(rng, tools))
            if hasattr(out, "instruction") and hasattr(out, "vector"):   # preferences.Preference
                instr, vec = out.instruction, out.vector
            else:
                instr, vec = out
            vec = [float(x) for x in vec]
            if len(vec) != len(tools) + 3:
                raise ValueError(f"preference_fn returned P of length {len(vec)}; expected "
                                 f"{len(tools) + 3} (tools + accuracy, cost, latency)")
            return str(instr), vec, tools
        return "", [], []

    def _generate_examples(self, examples: list, split: str, pairs: Optional[dict]):
        for ex in examples:
            instr, vec, tools = self._preference(ex["id"], split, pairs)
            task = ex.get("task")
            text = sources.task_instruction(task) if task is not None else ex["question"]
            yield ex["id"], {
                "id": ex["id"], "domain": ex.get("domain", ""), "text": text,
                "answer": ex.get("answer", ""),
                "task_json": json.dumps(task, ensure_ascii=False) if task is not None else "",
                "meta_json": json.dumps(ex.get("meta") or {}, ensure_ascii=False, default=str),
                "preference_instruction": instr,
                "preference": np.asarray(vec, dtype=np.float32),
                "preference_tools_json": json.dumps(tools)}


def _source(builder: _Base) -> str:
    cfg = builder.builder_config
    if cfg is None or not cfg.source:
        raise ValueError(f"{builder.name}: give a DataConfig(name=..., source=PATH)")
    return cfg.source


class OjTau2Tasks(_Base):
    """τ²-bench-format tasks of any domain (from a tasks.json path)."""

    def _raw(self, dl_manager):
        return sources.read_tau2_tasks(_source(self), self.builder_config.domain)


class OjToolscaleTasks(_Base):
    """ToolScale-format tasks (synthesized domain folder, tasks.json, .jsonl or .parquet)."""

    def _raw(self, dl_manager):
        return sources.read_toolscale_tasks(_source(self), self.builder_config.domain)


class OjFrames(_Base):
    """FRAMES multi-hop QA (824 questions; evaluation)."""

    def _raw(self, dl_manager):
        return sources.read_frames(_source(self))


class OjHle(_Base):
    """Humanity's Last Exam, text-only questions (evaluation); files from manual_dir."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = sources.HLE_HELP.format(manual_dir="<manual_dir>")

    def _raw(self, dl_manager):
        return sources.read_hle(_manual_dir(dl_manager))


class OjGeneralThought(_Base):
    """GeneralThought-430K(-filtered) QA (training); files from manual_dir."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = sources.GENERAL_THOUGHT_HELP.format(manual_dir="<manual_dir>")

    def _raw(self, dl_manager):
        return sources.read_general_thought(_manual_dir(dl_manager))


def _manual_dir(dl_manager) -> Optional[str]:
    try:
        d = dl_manager.manual_dir
    except AssertionError:   # tfds asserts when no manual_dir was configured
        return None
    return str(d) if d and str(d) not in ("", ".") else None


BUILDERS = {"tau2": OjTau2Tasks, "toolscale": OjToolscaleTasks, "frames": OjFrames,
            "hle": OjHle, "general_thought": OjGeneralThought}


def build_dataset(kind: str, *, data_dir: str, name: str = "default", source: str = "",
                  manual_dir: str = "", domain: str = "", preferences: str = "",
                  tool_names: Sequence[str] = (), preference_seed: int = 0,
                  preference_fn: Optional[PreferenceFn] = None) -> tfds.core.DatasetBuilder:
    """Build (``download_and_prepare``) one dataset under ``data_dir`` and return its builder.

    ``kind``: one of :data:`BUILDERS`; ``name``: the config name (``[a-z0-9_]``), e.g. the
    domain, with a ``_pref`` suffix for a preference-augmented variant. Already-built datasets
    are reused (tfds semantics).
    """
    if kind not in BUILDERS:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {sorted(BUILDERS)}")
    config = DataConfig(name=name, source=str(source), domain=domain,
                        preferences=str(preferences), tool_names=tuple(tool_names),
                        preference_seed=preference_seed)
    builder = BUILDERS[kind](data_dir=data_dir, config=config, preference_fn=preference_fn)
    dl_config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
    builder.download_and_prepare(download_config=dl_config)
    return builder


def load_split(kind: str, *, data_dir: str, name: str = "default", split: str = "train"):
    """Random-access source of a built split via ``tfds.data_source`` (no TF, no builder args)."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {sorted(BUILDERS)}")
    tfds_name = f"{BUILDERS[kind].name}/{name}"
    return tfds.data_source(tfds_name, data_dir=data_dir, split=split,
                            builder_kwargs={"file_format": FILE_FORMAT})


def decode_example(record: dict) -> dict:
    """bytes → str, JSON fields parsed (``task`` / ``meta`` / ``preference_tools``), P as list."""
    def s(v: Any) -> str:
        return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v)
    out = {k: s(record[k]) for k in ("id", "domain", "text", "answer",
                                     "preference_instruction")}
    tj = s(record["task_json"])
    out["task"] = json.loads(tj) if tj else None
    out["meta"] = json.loads(s(record["meta_json"]) or "{}")
    out["preference"] = [float(x) for x in np.asarray(record["preference"]).reshape(-1)]
    out["preference_tools"] = json.loads(s(record["preference_tools_json"]) or "[]")
    return out
