"""Programmatic intents → verifiable tau2 tasks → harder variants (paper_spec §5.1 step 2).

An *intent* is a JSON object naming one database change the user wants:

* ``{"kind": "update", "tool": NAME, "keys": [...], "value": NEW}`` — change one categorical
  field of an entry (the tool's ``x-op`` says which collection and field);
* ``{"kind": "create", "tool": NAME, "keys": [parent keys], "fields": {arg: value}}`` — add an
  entry to a nested collection.

:class:`Composer` proposes intents from valid DB entries, turns an intent into a *plan* (gold
actions: identify the user's entry with the search tool when there is one, read it, then write;
plus one fact the agent must tell the user, read from the entry) and renders a plan as a tau2
task (instruction = reason for call / known info / unknown info; ``evaluation_criteria`` =
gold ``actions`` + ``communicate_info``, reward basis DB + COMMUNICATE). Harder variants
(:meth:`Composer.evolve`, paper Table 13: more entities, added constraints) merge two plans for
the same customer or add a conditional constraint the agent must check.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any, Optional

from orchestra_jax.data.toolscale.schema import CollectionInfo, ValidationReport, iter_records
from orchestra_jax.data.toolscale.tools import singular, words
from orchestra_jax.envs.tau2.spec_tools import get_field

__all__ = ["Composer", "render_task", "INTENT_SCHEMA"]

# JSON schema every intent (programmatic or LLM-proposed) must satisfy.
INTENT_SCHEMA = {
    "type": "object",
    "properties": {"kind": {"enum": ["update", "create"]}, "tool": {"type": "string"},
                   "keys": {"type": "array", "items": {"type": "string"}},
                   "value": {}, "fields": {"type": "object"}},
    "required": ["kind", "tool", "keys"],
}


def _locate(db: dict, path: list, keys: list) -> Optional[dict]:
    cur: Any = db
    for coll, key in zip(path, keys):
        cur = cur.get(coll, {}).get(key) if isinstance(cur, dict) else None
        if cur is None:
            return None
    return cur if isinstance(cur, dict) else None


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


class Composer:
    """Intents and tasks over one domain's DB + tools spec (deterministic given ``seed``)."""

    def __init__(self, domain: str, db: dict, infos: list[CollectionInfo], spec: list[dict],
                 report: Optional[ValidationReport] = None, seed: int = 0):
        self.domain, self.db, self.infos, self.spec = domain, db, infos, spec
        self.report = report
        self.rng = random.Random(seed)
        self.by_name = {e["function"]["name"]: e for e in spec}
        self.info_by_path = {tuple(i.path): i for i in infos}
        self._records = {tuple(i.path): [(k, r) for k, r in iter_records(db, i)
                                         if report is None or report.is_valid(i, k)]
                         for i in infos}

    # -- tools lookup ---------------------------------------------------------------------
    def _tool(self, kind: str, path: tuple) -> Optional[dict]:
        for e in self.spec:
            op = e.get("x-op") or {}
            if op.get("kind") == kind and tuple(op.get("path") or ()) == tuple(path):
                return e
        return None

    def _write_tools(self) -> list[dict]:
        return [e for e in self.spec if (e.get("x-op") or {}).get("kind") in ("update", "create")
                and tuple(e["x-op"]["path"]) in self.info_by_path]

    # -- intents --------------------------------------------------------------------------
    def propose_intent(self, tool: Optional[dict] = None,
                       top_key: Optional[str] = None) -> Optional[dict]:
        """A random feasible intent (optionally for ``tool`` and/or top-level entry ``top_key``)."""
        tools = [tool] if tool else self._write_tools()
        if not tools:
            return None
        tool = self.rng.choice(tools)
        op = tool["x-op"]
        path = tuple(op["path"])
        records = self._records.get(path, [])
        if top_key is not None:
            records = [(k, r) for k, r in records if k[0] == top_key]
        if op["kind"] == "update":
            enum = tool["function"]["parameters"]["properties"][op["value_arg"]].get("enum", [])
            cands = []
            for keys, rec in records:
                try:
                    cur = get_field(rec, op["field"])
                except KeyError:
                    continue
                if cur in enum and len(enum) > 1:
                    cands.append((keys, cur))
            if not cands:
                return None
            keys, cur = self.rng.choice(cands)
            value = self.rng.choice([v for v in enum if v != cur])
            return {"kind": "update", "tool": tool["function"]["name"], "keys": list(keys),
                    "value": value}
        parents = self._records.get(path[:-1], [])
        if top_key is not None:
            parents = [(k, r) for k, r in parents if k[0] == top_key]
        if not parents or not records:
            return None
        pkeys, _ = self.rng.choice(parents)
        _, example = self.rng.choice(records)
        fields = {}
        for arg, dotted in op["fields"].items():
            try:
                fields[arg] = get_field(example, dotted)
            except KeyError:
                return None
        return {"kind": "create", "tool": tool["function"]["name"], "keys": list(pkeys),
                "fields": fields}

    # -- intent → plan --------------------------------------------------------------------
    def _identify(self, top_path: str, top_key: str) -> tuple[list, list]:
        """(actions, known facts) that let the agent find the user's top-level entry."""
        info = self.info_by_path[(top_path,)]
        rec = self.db[top_path][top_key]
        label = words(singular(top_path))
        search = self._tool("search", (top_path,))
        actions, known = [], []
        if search is not None:
            args = {}
            for arg, dotted in search["x-op"]["match"].items():
                try:
                    v = get_field(rec, dotted)
                except KeyError:
                    v = None
                if not isinstance(v, str) or not v.strip():
                    args = {}
                    break
                args[arg] = v
            if args:
                found = [k for k, r in self.db[top_path].items()
                         if all(isinstance(get_field_safe(r, d), str)
                                and get_field_safe(r, d).strip().lower() == args[a].strip().lower()
                                for a, d in search["x-op"]["match"].items())]
                if found == [top_key]:   # the search must single the entry out
                    actions.append({"name": search["function"]["name"], "arguments": args})
                    known += [f"your {words(search['x-op']['match'][a].split('.')[-1])} is {v}"
                              for a, v in args.items()]
        if not actions:
            known.append(f"your {words(info.id_field)} is {top_key}")
        get = self._tool("get", (top_path,))
        if get is not None:
            actions.append({"name": get["function"]["name"],
                            "arguments": {info.id_field: top_key}})
        return actions, known

    def _fact(self, rec: dict, info: CollectionInfo, exclude: str) -> Optional[tuple[str, str]]:
        """(field, value) of a scalar the agent must report (not the changed field, not an id)."""
        cands = []
        for f in info.fields.values():
            if f.path in (exclude, info.id_field):
                continue
            if f.type not in ("string", "integer", "number") or f.path.endswith(("_id", "_ref")):
                continue
            if not all(p[:1].isalpha() for p in f.path.split(".")):
                continue
            try:
                v = get_field(rec, f.path)
            except KeyError:
                continue
            if v is None or isinstance(v, bool) or (isinstance(v, str) and
                                                    not 2 <= len(v.strip()) <= 40):
                continue
            cands.append((f.path, _fmt(v)))
        return self.rng.choice(sorted(cands)) if cands else None

    def plan(self, intent: dict) -> Optional[dict]:
        """Gold actions, communicate info and instruction parts for one intent (None if the
        intent does not address existing entries / known tools)."""
        tool = self.by_name.get(intent.get("tool"))
        if tool is None or (tool.get("x-op") or {}).get("kind") != intent.get("kind"):
            return None
        op = tool["x-op"]
        path, keys = list(op["path"]), [str(k) for k in intent["keys"]]
        info = self.info_by_path.get(tuple(path))
        if info is None:
            return None
        label = words(singular(path[-1]))
        if intent["kind"] == "update":
            if len(keys) != len(path):
                return None
            rec = _locate(self.db, path, keys)
            if rec is None:
                return None
            try:
                old = get_field(rec, op["field"])
            except KeyError:
                return None
            actions, known = self._identify(path[0], keys[0])
            if len(path) > 1:
                get = self._tool("get", tuple(path))
                known.append(f"the {label} in question has {words(info.id_field)} {keys[-1]}")
                if get is not None:
                    actions.append({"name": get["function"]["name"],
                                    "arguments": dict(zip(info.key_args, keys))})
            args = {**dict(zip(op["keys"], keys)), op["value_arg"]: intent["value"]}
            actions.append({"name": tool["function"]["name"], "arguments": args})
            what = f"the {words(op['field'])} of your {label}"
            if len(path) > 1:
                what += f" {keys[-1]}"
            reason = f"You want {what} changed to {_fmt(intent['value'])}."
            fact = self._fact(rec, info, op["field"])
            return {"actions": actions, "known": known, "reasons": [reason],
                    "facts": [fact] if fact else [], "fact_of": [label] if fact else [],
                    "top": [path[0], keys[0]], "intents": [intent],
                    "constraint": {"field": op["field"], "old": old, "label": label,
                                   "enum": tool["function"]["parameters"]["properties"]
                                   [op["value_arg"]].get("enum", [])}}
        # create
        if len(keys) != len(path) - 1 or _locate(self.db, path[:-1], keys) is None:
            return None
        actions, known = self._identify(path[0], keys[0])
        args = {**dict(zip(op["keys"], keys)), **intent.get("fields", {})}
        actions.append({"name": tool["function"]["name"], "arguments": args})
        details = ", ".join(f"{words(op['fields'][a])} {_fmt(v)}"
                            for a, v in (intent.get("fields") or {}).items())
        reason = f"You want to add a new {label} to your {words(singular(path[0]))}: {details}."
        return {"actions": actions, "known": known, "reasons": [reason], "facts": [],
                "fact_of": [], "new_id_of": [len(actions) - 1, info.id_field, label],
                "top": [path[0], keys[0]], "intents": [intent], "constraint": None}

    # -- harder variants (paper Table 13) -------------------------------------------------
    def evolve(self, plan: dict) -> Optional[dict]:
        """A harder plan: another change for the same customer (more entities) or, for an
        update, a constraint the agent must check first. None when neither applies."""
        options = ["merge"] + (["constraint"] if plan.get("constraint") and
                               len(plan["constraint"]["enum"]) >= 3 else [])
        choice = self.rng.choice(options)
        if choice == "constraint" and len(plan["intents"]) == 1:
            c = plan["constraint"]
            new = plan["intents"][0]["value"]
            others = [v for v in c["enum"] if v not in (new, c["old"])]
            wrong_old = self.rng.choice([v for v in c["enum"] if v != c["old"]])
            alt = self.rng.choice(others)
            out = copy.deepcopy(plan)
            out["reasons"] = [
                f"Regarding the {words(c['field'])} of your {c['label']}: if it is currently "
                f"{_fmt(c['old'])}, you want it changed to {_fmt(new)}; if it is "
                f"{_fmt(wrong_old)} you want {_fmt(alt)} instead. You do not know the current "
                f"value; the agent has to check it."]
            out["constraint"] = None
            out["evolved"] = plan.get("evolved", 0) + 1
            return out
        for _ in range(8):
            other_intent = self.propose_intent(top_key=plan["top"][1])
            if other_intent is None:
                continue
            other = self.plan(other_intent)
            if other is None or other["top"] != plan["top"] or \
                    any(_same_target(other_intent, i) for i in plan["intents"]):
                continue
            out = copy.deepcopy(plan)
            seen = {json.dumps(a, sort_keys=True) for a in out["actions"]}
            offset_map = {}
            for i, a in enumerate(other["actions"]):
                k = json.dumps(a, sort_keys=True)
                if k not in seen or a["name"] == other["actions"][-1]["name"] and \
                        i == len(other["actions"]) - 1:
                    offset_map[i] = len(out["actions"])
                    out["actions"].append(a)
                    seen.add(k)
            out["known"] += [k for k in other["known"] if k not in out["known"]]
            out["reasons"] += other["reasons"]
            out["facts"] += other["facts"]
            out["fact_of"] += other["fact_of"]
            if other.get("new_id_of"):
                idx, f, lab = other["new_id_of"]
                out.setdefault("extra_new_ids", []).append([offset_map.get(idx), f, lab])
            out["intents"] += other["intents"]
            out["constraint"] = None
            out["evolved"] = plan.get("evolved", 0) + 1
            return out
        return None


def get_field_safe(rec: Any, dotted: str) -> Any:
    try:
        return get_field(rec, dotted)
    except KeyError:
        return None


def _sentence(text: str) -> str:
    return (text[:1].upper() + text[1:] + ".") if text else ""


def _same_target(a: dict, b: dict) -> bool:
    return a.get("tool") == b.get("tool") and list(a.get("keys", [])) == list(b.get("keys", []))


def render_task(domain: str, task_id: str, plan: dict, new_ids: Optional[list] = None) -> dict:
    """tau2 ``tasks.json`` entry for a plan. ``new_ids``: ids the gold replay created (the agent
    must tell the user each one)."""
    communicate = [v for _, v in plan["facts"]] + [str(i) for i in (new_ids or [])]
    asks = [f"the {words(f)} of your {lab}" for (f, _), lab in zip(plan["facts"],
                                                                   plan["fact_of"])]
    asks += ["the id of the newly added entry"] * len(new_ids or [])
    reason = " ".join(plan["reasons"])
    instructions = ("If the agent asks you to confirm a change, say yes. "
                    + (f"Before finishing, ask the agent to tell you {' and '.join(asks)}. "
                       if asks else "")
                    + "Do not make up information you were not given.")
    writes = plan["actions"]
    return {
        "id": task_id,
        "description": {"purpose": reason, "relevant_policies": None,
                        "notes": f"synthesized by orchestra_jax (programmatic driver); "
                                 f"{len(plan['intents'])} intent(s), evolved "
                                 f"{plan.get('evolved', 0)}x"},
        "user_scenario": {"persona": None, "instructions": {
            "domain": domain, "reason_for_call": reason,
            "known_info": _sentence("; ".join(plan["known"])),
            "unknown_info": "You do not know any internal ids other than the ones given above.",
            "task_instructions": instructions}},
        "initial_state": None,
        "evaluation_criteria": {
            "actions": [{"action_id": f"{task_id}_{i}", "name": a["name"],
                         "arguments": a["arguments"], "info": None}
                        for i, a in enumerate(writes)],
            "communicate_info": communicate, "nl_assertions": None,
            "reward_basis": ["DB", "COMMUNICATE"]},
    }
