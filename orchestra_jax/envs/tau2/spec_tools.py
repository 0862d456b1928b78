"""Declarative tools over a keyed JSON database (the ToolScale ``tools.json`` format).

A synthesized domain folder carries ``tools.json``: a list of OpenAI ``tools`` entries, each with
two extensions that make it executable without shipping code::

    {"type": "function",
     "function": {"name": "update_account_status", "description": "...", "parameters": {...}},
     "x-tool-type": "write",                       # tau2 read / write / generic
     "x-op": {"kind": "update",                    # get | search | update | create | generic
              "path": ["clients", "accounts"],     # collection names, outermost first
              "keys": ["client_id", "account_id"], # argument naming the record at each level
              "field": "status",                   # dotted field inside the record (update)
              "value_arg": "status"}}              # argument holding the new value (update)

Operations (all deterministic; every failure raises :class:`ToolError`, which
:class:`~orchestra_jax.envs.tau2.toolset.ToolSet` turns into an ``"Error: ..."`` observation):

* ``get`` — the record at ``db[path[0]][key0][path[1]][key1]...``.
* ``search`` — ids of the records of the top-level collection ``path[0]`` whose fields
  (``match``: argument → dotted field) equal the given arguments (strings compared
  case-insensitively); at least one criterion, at most ``limit`` ids, sorted.
* ``update`` — set ``field`` of the addressed record to ``value_arg`` (the field must exist);
  returns the updated record.
* ``create`` — add a record to the collection ``path`` (under the parent records addressed by
  ``keys``): a copy of ``template`` with ``fields`` (argument → dotted field) filled in and a new
  id ``f"{id_prefix}{n}"`` (smallest n >= 1 not taken) stored in ``id_field``; returns it.
* ``generic`` — tau2's ``transfer_to_human_agents`` / ``calculate`` (``name`` in ``x-op``).

:func:`toolset_from_spec` validates a spec up front (unknown kinds, bad paths, names) and raises
``ValueError`` naming the offending entry, so a broken ``tools.json`` fails at load time.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Callable, Mapping, Sequence

from orchestra_jax.envs.tau2.generic import calculate, transfer_to_human_agents
from orchestra_jax.envs.tau2.toolset import GENERIC, READ, WRITE, FunctionTool, ToolError, ToolSet

__all__ = ["SPEC_FILE", "OP_KINDS", "toolset_from_spec", "load_spec_file", "validate_spec",
           "get_field", "set_field"]

SPEC_FILE = "tools.json"
OP_KINDS = ("get", "search", "update", "create", "generic")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_GENERIC = {"transfer_to_human_agents": transfer_to_human_agents, "calculate": calculate}


def get_field(record: Any, dotted: str) -> Any:
    """``record["a"]["b"]`` for ``"a.b"``; ``KeyError`` when a part is missing."""
    cur = record
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


def set_field(record: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = record
    for part in parts[:-1]:
        if not isinstance(cur.get(part), dict):
            cur[part] = {}
        cur = cur[part]
    cur[parts[-1]] = value


def _singular(name: str) -> str:
    return name[:-1] if name.endswith("s") and len(name) > 3 else name


def _locate(db: dict, path: Sequence[str], keys: Sequence[Any]) -> dict:
    """The record addressed by ``keys`` along ``path`` (len(keys) == len(path))."""
    cur: Any = db
    for coll, key in zip(path, keys):
        table = cur.get(coll) if isinstance(cur, dict) else None
        if not isinstance(table, dict):
            raise ToolError(f"collection {coll!r} not found")
        if key not in table:
            raise ToolError(f"{_singular(coll).replace('_', ' ')} {key} not found")
        cur = table[key]
    if not isinstance(cur, dict):
        raise ToolError(f"record {list(keys)} is not an object")
    return cur


def _collection(db: dict, path: Sequence[str], keys: Sequence[Any]) -> dict:
    parent = _locate(db, path[:-1], keys) if len(path) > 1 else db
    table = parent.get(path[-1])
    if table is None:
        table = parent[path[-1]] = {}
    if not isinstance(table, dict):
        raise ToolError(f"collection {path[-1]!r} is not a keyed collection")
    return table


def _norm(v: Any) -> Any:
    return v.strip().lower() if isinstance(v, str) else v


def _make_fn(op: Mapping[str, Any]) -> Callable[..., Any]:
    kind = op["kind"]
    path = list(op.get("path") or [])
    keys = list(op.get("keys") or [])

    def ids(kwargs: Mapping[str, Any]) -> list:
        return [kwargs[k] for k in keys]

    if kind == "get":
        def fn(db, **kw):
            return copy.deepcopy(_locate(db, path, ids(kw)))
    elif kind == "search":
        match = dict(op["match"])
        limit = int(op.get("limit", 20))

        def fn(db, **kw):
            crit = {arg: kw[arg] for arg in match if kw.get(arg) not in (None, "")}
            if not crit:
                raise ToolError(f"give at least one of {sorted(match)}")
            table = db.get(path[0])
            if not isinstance(table, dict):
                raise ToolError(f"collection {path[0]!r} not found")
            found = []
            for rid, rec in table.items():
                try:
                    if all(_norm(get_field(rec, match[a])) == _norm(v) for a, v in crit.items()):
                        found.append(rid)
                except KeyError:
                    continue
            if not found:
                raise ToolError(f"no {_singular(path[0]).replace('_', ' ')} matches {crit}")
            return sorted(found)[:limit]
    elif kind == "update":
        field, value_arg = op["field"], op["value_arg"]

        def fn(db, **kw):
            rec = _locate(db, path, ids(kw))
            try:
                get_field(rec, field)
            except KeyError:
                raise ToolError(f"record has no field {field!r}") from None
            set_field(rec, field, kw[value_arg])
            return copy.deepcopy(rec)
    elif kind == "create":
        fields = dict(op.get("fields") or {})
        template = op.get("template") or {}
        id_field, prefix = op["id_field"], str(op.get("id_prefix", "NEW-"))

        def fn(db, **kw):
            table = _collection(db, path, ids(kw))
            n = 1
            while f"{prefix}{n}" in table:
                n += 1
            rec = copy.deepcopy(template)
            for arg, dotted in fields.items():
                if arg in kw:
                    set_field(rec, dotted, kw[arg])
            new_id = f"{prefix}{n}"
            rec[id_field] = new_id
            table[new_id] = rec
            return copy.deepcopy(rec)
    elif kind == "generic":
        fn = _GENERIC[op["name"]]
    else:  # validate_spec rejects this first
        raise ValueError(f"unknown op kind {kind!r}")
    return fn


def validate_spec(spec: Any) -> list[str]:
    """Problems with a tools spec (empty list when it is usable)."""
    if not isinstance(spec, list):
        return [f"tools spec must be a JSON list, got {type(spec).__name__}"]
    problems, names = [], set()
    for i, entry in enumerate(spec):
        where = f"tools[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("function"), dict):
            problems.append(f"{where}: needs a 'function' object")
            continue
        f, op = entry["function"], entry.get("x-op")
        name = f.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            problems.append(f"{where}: invalid function name {name!r}")
            continue
        where = f"tools[{i}] ({name})"
        if name in names:
            problems.append(f"{where}: duplicate name")
        names.add(name)
        params = f.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict) or params.get("type") != "object":
            problems.append(f"{where}: parameters must be a JSON-schema object")
            continue
        props = params.get("properties") or {}
        if entry.get("x-tool-type", READ) not in (READ, WRITE, GENERIC):
            problems.append(f"{where}: x-tool-type must be read/write/generic")
        if not isinstance(op, dict) or op.get("kind") not in OP_KINDS:
            problems.append(f"{where}: x-op.kind must be one of {list(OP_KINDS)}")
            continue
        kind = op["kind"]
        if kind == "generic":
            if op.get("name") not in _GENERIC:
                problems.append(f"{where}: generic op name must be one of {sorted(_GENERIC)}")
            continue
        path, keys = op.get("path"), op.get("keys") or []
        if not isinstance(path, list) or not path or not all(isinstance(p, str) for p in path):
            problems.append(f"{where}: x-op.path must be a non-empty list of collection names")
            continue
        want = {"get": len(path), "update": len(path), "search": 0,
                "create": len(path) - 1}[kind]
        if len(keys) != want:
            problems.append(f"{where}: {kind} over {path} needs {want} key argument(s), "
                            f"got {keys}")
        args = list(keys)
        if kind == "search":
            if not isinstance(op.get("match"), dict) or not op["match"]:
                problems.append(f"{where}: search needs x-op.match {{argument: field}}")
            else:
                args += list(op["match"])
        if kind == "update":
            if not isinstance(op.get("field"), str) or not isinstance(op.get("value_arg"), str):
                problems.append(f"{where}: update needs x-op.field and x-op.value_arg")
            else:
                args.append(op["value_arg"])
        if kind == "create":
            if not isinstance(op.get("id_field"), str):
                problems.append(f"{where}: create needs x-op.id_field")
            if not isinstance(op.get("fields", {}), dict):
                problems.append(f"{where}: x-op.fields must be {{argument: field}}")
            else:
                args += list(op.get("fields", {}))
        missing = [a for a in args if a not in props]
        if missing:
            problems.append(f"{where}: arguments {missing} not declared in parameters")
    return problems


def toolset_from_spec(spec: Any) -> ToolSet:
    """Executable :class:`ToolSet` from a tools spec; ``ValueError`` listing every problem."""
    problems = validate_spec(spec)
    if problems:
        raise ValueError("invalid tools spec: " + "; ".join(problems))
    tools = []
    for entry in spec:
        f = entry["function"]
        tools.append(FunctionTool(
            name=f["name"], description=f.get("description", ""),
            parameters=f.get("parameters", {"type": "object", "properties": {}}),
            fn=_make_fn(entry["x-op"]), tool_type=entry.get("x-tool-type", READ)))
    return ToolSet(tools)


def load_spec_file(path: Any) -> ToolSet:
    with open(path, encoding="utf-8") as fh:
        try:
            spec = json.load(fh)
        except json.JSONDecodeError as e:
            raise ValueError(f"cannot parse {path}: {e}") from None
    try:
        return toolset_from_spec(spec)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
