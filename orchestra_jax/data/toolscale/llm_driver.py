"""LLM driver for the ToolScale pipeline: any OpenAI-compatible chat model (paper's way).

Every model call goes through :meth:`LLMDriver.ask`: the reply's JSON is extracted, validated
against the stage's JSON schema (+ a stage check), re-asked with the error up to
``max_retries`` times, and otherwise dropped with a count (``<stage>.dropped``). Each final
outcome — valid output or drop — is appended to ``<out>/journal.jsonl`` keyed by
(stage, key); a rerun replays the journal instead of calling the model again, so an
interrupted run resumes where it stopped. Model/transport errors count as invalid outputs;
nothing a model says can crash the run.

Stages: database (seed DB if the domain exists, else subjects → schema → entries) and LLM entry
validation (paper Table 9; a sample), tools (declarative ``x-op`` specs; none valid → the
schema-derived tools when ``llm_tools_fallback``), intents → tasks → harder variants. The
pipeline's filters then keep only tasks whose gold calls execute, change the DB and score 1.0.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
from typing import Any, Callable, Optional

import jsonschema

from orchestra_jax.data.toolscale import prompts
from orchestra_jax.data.toolscale.pipeline import SynthesisConfig, SynthesisContext, _load_seed
from orchestra_jax.data.toolscale.schema import iter_records
from orchestra_jax.data.toolscale.tools import derive_tools
from orchestra_jax.envs.tau2 import DomainError
from orchestra_jax.envs.tau2.spec_tools import toolset_from_spec

__all__ = ["LLMDriver", "extract_json", "Journal"]

_ENTRIES_PER_SUBJECT = 5


def extract_json(text: str) -> Any:
    """The first JSON value in ``text`` (```json fences allowed); ``ValueError`` if none."""
    if not isinstance(text, str):
        raise ValueError("reply is not text")
    m = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if m:
        text = m.group(1)
    dec = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "[{":
            try:
                return dec.raw_decode(text[i:])[0]
            except json.JSONDecodeError:
                continue
            except RecursionError:   # e.g. a degenerate "[[[[…" reply
                raise ValueError("JSON nested too deeply") from None
    raise ValueError(f"no JSON value in reply {text[:120]!r}")


def _reason(e: Exception) -> str:
    """First line of an error about a model output (its str() may itself fail, e.g. on a
    deeply nested value)."""
    try:
        msg = e.message if isinstance(e, jsonschema.ValidationError) else str(e)
        line = (msg.splitlines() or [""])[0][:200]
    except Exception:   # noqa: BLE001
        line = "(unprintable)"
    return line if isinstance(e, (ValueError, jsonschema.ValidationError)) else \
        f"{type(e).__name__}: {line}"


def _normalize_spec(spec: list) -> list:
    """A model's (valid) tools spec with the optional ``parameters`` filled in, so later stages
    and the written policy can list every tool's arguments."""
    out = []
    for e in spec:
        f = dict(e["function"])
        params = dict(f.get("parameters") or {"type": "object"})
        if not isinstance(params.get("properties"), dict):
            params["properties"] = {}
        f["parameters"] = params
        out.append({**e, "function": f})
    return out


class Journal:
    """Append-only JSONL of final stage outcomes keyed by (stage, key)."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.entries: dict[tuple, dict] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    e = json.loads(line)
                    self.entries[(e["stage"], e["key"])] = e
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue   # a torn last line from an interrupted run

    def get(self, stage: str, key: str) -> Optional[dict]:
        return self.entries.get((stage, key))

    def put(self, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
        self.entries[(entry["stage"], entry["key"])] = entry


class LLMDriver:
    """``chat(messages) -> str`` is the model (sync); :meth:`from_config` builds it from an
    OpenAI-compatible endpoint."""

    name = "llm"

    def __init__(self, chat: Callable[[list], str], *, max_retries: int = 2,
                 num_intents: int = 8, tools_fallback: bool = True, validate_sample: int = 8):
        self.chat = chat
        self.max_retries = max_retries
        self.num_intents = num_intents
        self.tools_fallback = tools_fallback
        self.validate_sample = validate_sample
        self.calls = 0
        self.journal: Optional[Journal] = None

    @classmethod
    def from_config(cls, config: SynthesisConfig) -> "LLMDriver":
        from orchestra_jax.tools.llm_client import ExpertConfig, OpenAIChatClient
        if not config.base_url or not config.model:
            raise ValueError("the llm driver needs --config.base_url (…/v1) and --config.model")
        client = OpenAIChatClient(ExpertConfig(
            base_url=config.base_url, model=config.model, api_key_env=config.api_key_env or None,
            timeout_s=config.timeout_s, max_retries=1))
        loop = asyncio.new_event_loop()

        def chat(messages: list) -> str:
            resp = loop.run_until_complete(client.chat(
                messages, max_tokens=config.max_tokens, temperature=config.temperature))
            return resp.text or ""
        return cls(chat, max_retries=config.max_retries, num_intents=config.llm_num_intents,
                   tools_fallback=config.llm_tools_fallback,
                   validate_sample=config.llm_validate_sample)

    # -- one validated model call ---------------------------------------------------------
    def ask(self, ctx: SynthesisContext, stage: str, key: str, prompt: str, schema: dict,
            check: Optional[Callable[[Any], Optional[str]]] = None) -> Any:
        if self.journal is None:
            self.journal = Journal(pathlib.Path(ctx.config.out) / "journal.jsonl")
        done = self.journal.get(stage, key)
        if done is not None:
            ctx.counts[f"{stage}.resumed"] += 1
            if not done.get("ok"):
                ctx.drop(stage, f"{key}: {done.get('error')} (from journal)")
            return done.get("output") if done.get("ok") else None
        messages = [{"role": "system", "content": prompts.SYSTEM},
                    {"role": "user", "content": prompt}]
        error = ""
        for attempt in range(1 + self.max_retries):
            ctx.counts[f"{stage}.calls"] += 1
            self.calls += 1
            try:
                reply = self.chat(messages)
            except Exception as e:   # transport / server errors are invalid outputs too
                reply, error = "", f"model call failed: {type(e).__name__}: {e}"[:300]
            else:
                try:
                    value = extract_json(reply)
                    jsonschema.validate(value, schema)
                    problem = check(value) if check else None
                    if problem:
                        raise ValueError(problem)
                    self.journal.put({"stage": stage, "key": key, "ok": True, "output": value,
                                      "attempts": attempt + 1})
                    ctx.counts[f"{stage}.ok"] += 1
                    return value
                except Exception as e:   # noqa: BLE001 — nothing a model says may crash the run
                    error = f"invalid output: {_reason(e)}"
                ctx.counts[f"{stage}.invalid"] += 1
            messages = messages[:2] + [
                {"role": "assistant", "content": reply[:2000]},
                {"role": "user", "content": f"That reply was not usable ({error}). Reply again "
                                            f"with only the JSON requested."}]
        self.journal.put({"stage": stage, "key": key, "ok": False, "error": error,
                          "attempts": 1 + self.max_retries})
        ctx.drop(stage, f"{key}: {error}")
        return None

    # -- stages ---------------------------------------------------------------------------
    def database(self, ctx: SynthesisContext) -> dict:
        try:
            _load_seed(ctx)
            db = ctx.db
        except DomainError:
            db = self._generate_db(ctx)
        self._validate_sample(ctx, db)
        return db

    def _generate_db(self, ctx: SynthesisContext) -> dict:
        dom = ctx.config.domain
        subjects = self.ask(ctx, "subjects", dom, prompts.SUBJECTS.format(domain=dom),
                            prompts.SUBJECTS_SCHEMA)
        if not subjects:
            raise RuntimeError(f"llm driver: no usable subjects for {dom!r} (see journal)")
        schema = self.ask(ctx, "schema", dom, prompts.SCHEMA.format(
            domain=dom, subjects=", ".join(subjects)), prompts.SCHEMA_SCHEMA)
        if not schema:
            raise RuntimeError(f"llm driver: no usable schema for {dom!r} (see journal)")
        db: dict = {}
        for subject in schema:
            entries = self.ask(ctx, "entries", subject, prompts.ENTRIES.format(
                domain=dom, schema=json.dumps(schema)[:3000], n=_ENTRIES_PER_SUBJECT,
                subject=subject), prompts.ENTRIES_SCHEMA)
            if entries:
                db[subject] = entries
        if not db:
            raise RuntimeError(f"llm driver: no usable entries for {dom!r} (see journal)")
        ctx.policy = f"{dom} support agent policy: help the user with their own records."
        return db

    def _validate_sample(self, ctx: SynthesisContext, db: dict) -> None:
        from orchestra_jax.data.toolscale.schema import collection_json_schema, infer_collections
        sample = [(info, keys, rec) for info in infer_collections(db)
                  for keys, rec in list(iter_records(db, info))[:2]][:self.validate_sample]
        for info, keys, rec in sample:
            schema = json.dumps(collection_json_schema(info))[:2000]
            verdict = self.ask(ctx, "validate", "/".join([*info.path, *keys]),
                               prompts.VALIDATE.format(schema=schema,
                                                       entry=json.dumps(rec)[:2000]),
                               prompts.VALIDATE_SCHEMA)
            if verdict is not None:
                ctx.counts["validate.satisfied" if all(verdict.values())
                           else "validate.not_satisfied"] += 1

    def tools(self, ctx: SynthesisContext) -> list[dict]:
        derived = derive_tools(ctx.db, ctx.infos, max_tools=ctx.config.max_tools)
        colls = "\n".join(f"- {list(i.path)} id={i.id_field} fields="
                          f"{list(i.fields)[:12]}" for i in ctx.infos)
        demo = json.dumps(next(e for e in derived if e["x-op"]["kind"] == "get"))

        def check(spec: Any) -> Optional[str]:
            try:
                toolset_from_spec(spec)
            except ValueError as e:
                return str(e)[:300]
            paths = {tuple(i.path) for i in ctx.infos}
            bad = [e["function"]["name"] for e in spec if e["x-op"].get("path") and
                   tuple(e["x-op"]["path"]) not in paths]
            return f"unknown collection paths in {bad}" if bad else None
        spec = self.ask(ctx, "tools", ctx.config.domain, prompts.TOOLS.format(
            domain=ctx.config.domain, collections=colls, demo=demo,
            max_tools=ctx.config.max_tools), prompts.TOOLS_SCHEMA, check)
        if spec:
            return _normalize_spec(spec)
        if not self.tools_fallback:
            raise RuntimeError("llm driver: no valid tools and llm_tools_fallback is off")
        ctx.counts["tools.fallback_schema_derived"] += 1
        return derived

    def _tool_text(self, ctx: SynthesisContext) -> str:
        return "\n".join(f"- {e['function']['name']}({', '.join(e['function']['parameters'].get('properties', {}))})"
                         f": {e['function'].get('description', '')}" for e in ctx.spec)

    def _records(self, ctx: SynthesisContext, i: int) -> str:
        out = []
        for info in ctx.infos:
            recs = list(iter_records(ctx.db, info))
            if recs:
                keys, rec = recs[(i * 7919) % len(recs)]
                out.append(f"{list(info.path)} {list(keys)}: {json.dumps(rec)[:600]}")
        return "\n".join(out)[:3000]

    def _task(self, ctx: SynthesisContext, tid: str, value: dict) -> dict:
        return {"id": tid, "description": {"purpose": value["reason_for_call"],
                                           "relevant_policies": None,
                                           "notes": "synthesized by orchestra_jax (llm driver)"},
                "user_scenario": {"persona": None, "instructions": {
                    "domain": ctx.config.domain, "reason_for_call": value["reason_for_call"],
                    "known_info": value.get("known_info", ""), "unknown_info": "",
                    "task_instructions": value.get("task_instructions", "")}},
                "initial_state": None,
                "evaluation_criteria": {
                    "actions": [{"action_id": f"{tid}_{i}", "name": a["name"],
                                 "arguments": a["arguments"], "info": None}
                                for i, a in enumerate(value["actions"])],
                    "communicate_info": list(value["communicate_info"]),
                    "nl_assertions": None, "reward_basis": ["DB", "COMMUNICATE"]}}

    def _check_task(self, ctx: SynthesisContext) -> Callable[[Any], Optional[str]]:
        names = {e["function"]["name"] for e in ctx.spec}

        def check(v: Any) -> Optional[str]:
            unknown = [a["name"] for a in v["actions"] if a["name"] not in names]
            return f"unknown tools {unknown}" if unknown else None
        return check

    def tasks(self, ctx: SynthesisContext, n: int) -> list[dict]:
        intents = self.ask(ctx, "intents", ctx.config.domain, prompts.INTENTS.format(
            domain=ctx.config.domain, tools=self._tool_text(ctx), n=self.num_intents),
            prompts.INTENTS_SCHEMA) or []
        out = []
        for i, intent in enumerate(intents[:n]):
            value = self.ask(ctx, "tasks", f"{i}:{intent[:80]}", prompts.TASK.format(
                domain=ctx.config.domain, tools=self._tool_text(ctx),
                records=self._records(ctx, i), intent=intent), prompts.TASK_SCHEMA,
                self._check_task(ctx))
            if value is not None:
                out.append(self._task(ctx, f"{ctx.config.domain}_llm_{i:05d}", value))
        return out

    def evolve(self, ctx: SynthesisContext, tasks: list[dict]) -> list[dict]:
        out = []
        for t in tasks:
            value = self.ask(ctx, "evolve", t["id"], prompts.EVOLVE.format(
                domain=ctx.config.domain, tools=self._tool_text(ctx),
                records=self._records(ctx, len(out)),
                task=json.dumps(t["evaluation_criteria"])[:2000]), prompts.TASK_SCHEMA,
                self._check_task(ctx))
            if value is not None:
                out.append(self._task(ctx, f"{t['id']}_h1", value))
        return out
