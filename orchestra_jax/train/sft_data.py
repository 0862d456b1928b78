"""SFT data: JSONL files → training :class:`~orchestra_jax.train.batch.Sample` s → a deterministic,
resumable stream of packed batches.

Two line formats, detected per line:

* **trajectory** (what the rollout scripts write, ``rollout/trajectory.py``): ``tokens``,
  ``loss_mask``, … — the sample is the whole episode, trained only on the policy's tokens
  (``loss_mask``), environment/tool tokens are context;
* **chat**: ``{"messages": [...], "tools": [...]?}`` rendered by our chat template
  (``chat/template.py``), trained on every assistant turn (its text up to and including
  ``<|im_end|>``), the rest is context.

:class:`SampleStream` walks the samples in a per-epoch permutation of ``seed`` and packs them
first-fit into ``[rows, L]`` until the next sample would need a row more: its position
``(epoch, index)`` is all a checkpoint needs to resume exactly.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any, Optional, Sequence

import numpy as np

from orchestra_jax.chat.template import ChatTemplate, encode_text
from orchestra_jax.rollout.trajectory import Trajectory
from orchestra_jax.train.batch import Sample, pack, trajectory_samples


class SFTDataError(ValueError):
    """A data file or line cannot be used (the message names the file and line)."""


def chat_sample(messages: Sequence[dict], tokenizer, *, tools: Optional[Sequence[dict]] = None,
                template: Optional[ChatTemplate] = None, source: str = "") -> Sample:
    """A chat conversation as one sample with loss on its assistant turns.

    Each assistant turn's tokens are the template's rendering of the conversation up to and
    including that turn minus the rendering before it (with the generation prompt), so the
    trained tokens are exactly what the policy would have to generate.
    """
    tmpl = template or ChatTemplate.from_tokenizer(tokenizer)
    msgs = [dict(m) for m in messages]
    if not any(m.get("role") == "assistant" for m in msgs):
        raise SFTDataError(f"{source}: conversation has no assistant turn to train on")
    tokens: list[int] = []
    mask: list[int] = []
    done_text = ""
    for i, m in enumerate(msgs):
        if m.get("role") != "assistant":
            continue
        before = tmpl.render(msgs[:i], tools=tools, add_generation_prompt=True)
        upto = tmpl.render(msgs[:i + 1], tools=tools)
        if not before.startswith(done_text) or not upto.startswith(before):
            raise SFTDataError(f"{source}: the chat template does not render turn {i} as a "
                               "continuation of the earlier turns (is an earlier assistant "
                               "turn's thinking dropped by the template?)")
        ctx = encode_text(tokenizer, before[len(done_text):])
        turn_text = upto[len(before):]
        end = turn_text.find("<|im_end|>")
        trained = turn_text[:end + len("<|im_end|>")] if end >= 0 else turn_text
        resp = encode_text(tokenizer, trained)
        tokens += ctx + resp
        mask += [0] * len(ctx) + [1] * len(resp)
        done_text = before + trained
    if not tokens or mask[0]:
        raise SFTDataError(f"{source}: conversation renders to no context before the first "
                           "assistant turn")
    t = np.asarray(tokens, np.int64)
    return Sample(t, np.asarray(mask, np.float32), np.zeros(len(t), np.float32), 0.0,
                  source=source)


def load_samples(path: str | pathlib.Path, tokenizer=None, *,
                 limit: Optional[int] = None) -> list[Sample]:
    """Every usable line of a JSONL file as a sample (format detected per line).

    Trajectory lines with no policy tokens (e.g. an engine error) are skipped; malformed lines
    raise :class:`SFTDataError` naming the file and line.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise SFTDataError(f"SFT data file not found: {path}")
    out: list[Sample] = []
    tmpl = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SFTDataError(f"{where}: invalid JSON: {e.msg}") from None
            if not isinstance(row, dict):
                raise SFTDataError(f"{where}: expected a JSON object")
            if "tokens" in row and "loss_mask" in row:
                try:
                    traj = Trajectory.from_json(row)
                    out.extend(trajectory_samples(traj, 0.0, unit="trajectory"))
                except (TypeError, ValueError) as e:
                    raise SFTDataError(f"{where}: bad trajectory record: {e}") from None
            elif "messages" in row:
                if tokenizer is None:
                    raise SFTDataError(f"{where}: chat lines need a tokenizer")
                if tmpl is None:
                    tmpl = ChatTemplate.from_tokenizer(tokenizer)
                out.append(chat_sample(row["messages"], tokenizer, tools=row.get("tools"),
                                       template=tmpl, source=where))
            else:
                raise SFTDataError(f"{where}: neither a trajectory record (tokens, loss_mask) "
                                   "nor a chat record (messages)")
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise SFTDataError(f"{path}: no trainable samples")
    return out


class SampleStream:
    """Deterministic, resumable packed batches over ``samples`` (see module docstring)."""

    def __init__(self, samples: Sequence[Sample], rows: int, length: int, seed: int = 0):
        if not samples:
            raise SFTDataError("SampleStream needs at least one sample")
        too_long = [s.source for s in samples if len(s) > length]
        if too_long:
            raise SFTDataError(f"{len(too_long)} samples are longer than seq_len={length} "
                               f"(first: {too_long[0]!r}); raise seq_len or shorten the data")
        self.samples = list(samples)
        self.rows, self.length, self.seed = rows, length, seed
        self.epoch, self.index = 0, 0

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.samples))

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def set_state(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])

    def next_batch(self) -> tuple[dict, dict]:
        """``(batch, stats)``: samples in stream order until the next one would not fit."""
        free: list[int] = []
        chosen: list[Sample] = []
        order = self._order(self.epoch)
        while True:
            s = self.samples[order[self.index]]
            n = len(s)
            r = next((i for i, room in enumerate(free) if room >= n), None)
            if r is None:
                if len(free) == self.rows:
                    break
                free.append(self.length)
                r = len(free) - 1
            free[r] -= n
            chosen.append(s)
            self.index += 1
            if self.index == len(order):
                self.epoch, self.index = self.epoch + 1, 0
                order = self._order(self.epoch)
        batches, stats = pack(chosen, self.rows, self.length, overflow="error")
        assert len(batches) == 1, "first-fit simulation and pack disagree"
        return batches[0], stats.summary()


def split_heldout(samples: Sequence[Sample], fraction: float, seed: int
                  ) -> tuple[list[Sample], list[Sample]]:
    """(train, held-out): a seeded ``fraction`` of the samples held out (at least one)."""
    if not 0 < fraction < 1:
        raise SFTDataError(f"eval_fraction must be in (0, 1), got {fraction}")
    if len(samples) < 2:
        raise SFTDataError("need at least 2 samples to hold some out")
    idx = np.random.default_rng(seed).permutation(len(samples))
    k = max(1, int(round(fraction * len(samples))))
    held = set(idx[:k].tolist())
    return ([s for i, s in enumerate(samples) if i not in held],
            [s for i, s in enumerate(samples) if i in held])


def eval_batches(samples: Sequence[Sample], rows: int, length: int) -> list[dict]:
    """All held-out samples packed (in order) into fixed batches."""
    batches, _ = pack(list(samples), rows, length, overflow="error")
    return batches


def describe(samples: Sequence[Sample]) -> dict[str, Any]:
    lens = [len(s) for s in samples]
    return {"samples": len(samples), "tokens": int(sum(lens)), "max_len": int(max(lens)),
            "loss_tokens": int(sum(s.num_loss_tokens for s in samples))}
