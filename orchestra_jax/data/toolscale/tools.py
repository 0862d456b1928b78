"""Tools derived from a database schema (the programmatic driver's version of paper Table 10).

For each keyed collection (see :mod:`.schema`): ``get_<x>_details`` (read by key), for top-level
collections with identifying text fields ``find_<x>_ids`` (search), for categorical / boolean
fields ``update_<x>_<field>`` (write, new value constrained to the values the DB uses), and for
nested collections ``add_<parent>_<x>`` (create, id generated). Plus tau2's generic
``transfer_to_human_agents`` and ``calculate``. The result is a ``tools.json`` spec that
:func:`orchestra_jax.envs.tau2.spec_tools.toolset_from_spec` executes.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Optional

from orchestra_jax.data.toolscale.schema import CollectionInfo, FieldInfo, iter_records

__all__ = ["derive_tools", "singular", "words", "MAX_TOOLS", "identifying_fields",
           "updatable_fields", "creatable_fields"]

MAX_TOOLS = 25          # [P] Table 5: 14–25 tools per ToolScale domain
_IDENT_HINTS = ("email", "phone", "title", "name", "code", "number", "pnr")
_MAX_CREATE_ARGS = 6    # [ours]


def singular(name: str) -> str:
    if name.endswith("vies"):
        return name[:-1]
    if name.endswith("ies") and len(name) > 4:
        return name[:-3] + "y"
    if name.endswith("sses") or name.endswith("ches"):
        return name[:-2]
    return name[:-1] if name.endswith("s") and not name.endswith("ss") and len(name) > 3 else name


def words(name: str) -> str:
    return name.replace(".", " ").replace("_", " ").strip()


def _ident(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", s).strip("_").lower() or "x"


def _usable(f: FieldInfo) -> bool:
    """Field paths without data-like segments (dates, numeric keys) and not too deep."""
    parts = f.path.split(".")
    return len(parts) <= 2 and all(re.match(r"^[A-Za-z_][A-Za-z0-9_ ]*$", p) for p in parts)


def _is_ref(path: str) -> bool:
    last = path.split(".")[-1]
    return last == "id" or last.endswith(("_id", "_ref", "_key", "_ids"))


def identifying_fields(info: CollectionInfo) -> list[FieldInfo]:
    """Text fields that identify an entry (unique or a first/last name pair), hinted names first."""
    cands = [f for f in info.fields.values() if _usable(f) and f.type == "string"
             and f.present >= 0.9 * f.total and f.path != info.id_field and not _is_ref(f.path)]
    unique = [f for f in cands if f.unique_ratio >= 0.9
              and any(h in f.path.split(".")[-1] for h in _IDENT_HINTS)]
    unique.sort(key=lambda f: (f.path.count("."), f.path))
    if unique:
        return unique[:1]
    names = [f for f in cands if f.path.endswith(("first_name", "last_name", "given", "family"))
             and f.path.rsplit(".", 1)[0] == cands[0].path.rsplit(".", 1)[0]] if cands else []
    return names[:2] if len(names) == 2 else []


def updatable_fields(info: CollectionInfo) -> list[FieldInfo]:
    fs = [f for f in info.fields.values() if _usable(f) and f.categorical and f.required
          and not _is_ref(f.path) and f.path != info.id_field]
    fs.sort(key=lambda f: (not f.path.endswith(("status", "state")), f.path.count("."), f.path))
    return fs


def creatable_fields(info: CollectionInfo) -> list[FieldInfo]:
    fs = [f for f in info.fields.values() if _usable(f) and f.required and not f.nullable
          and f.type in ("string", "integer", "number", "boolean") and f.path != info.id_field]
    fs.sort(key=lambda f: (f.path.count("."), _is_ref(f.path), f.path))
    return fs[:_MAX_CREATE_ARGS]


def _arg_names(fields: list[FieldInfo], taken: set) -> dict:
    out = {}
    for f in fields:
        name = _ident(f.path.split(".")[-1])
        if name in taken or name in out.values():
            name = _ident(f.path.replace(".", "_"))
        out[f.path] = name
    return out


def _schema_of(f: FieldInfo, description: str) -> dict:
    s: dict = {"type": f.type if f.type != "null" else "string", "description": description}
    if f.categorical:
        s["enum"] = list(f.values)
    return s


def _key_props(info: CollectionInfo) -> dict:
    props = {}
    for i, k in enumerate(info.key_args):
        owner = singular(info.path[i])
        props[k] = {"type": "string", "description": f"The {words(k)} of the {words(owner)}."}
    return props


def _entry(name: str, desc: str, props: dict, required: list, tool_type: str, op: dict) -> dict:
    return {"type": "function",
            "function": {"name": name[:64], "description": desc,
                         "parameters": {"type": "object", "properties": props,
                                        "required": required}},
            "x-tool-type": tool_type, "x-op": op}


def _template(db: dict, info: CollectionInfo) -> dict:
    """An empty entry shaped like the collection's first entry (scalars None, containers empty)."""
    first = next((rec for _, rec in iter_records(db, info)), {})

    def blank(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: blank(x) for k, x in v.items()} if len(v) <= 12 else {}
        if isinstance(v, list):
            return []
        return None
    return blank(copy.deepcopy(first))


def derive_tools(db: dict, infos: list[CollectionInfo], *, max_tools: int = MAX_TOOLS,
                 domain: str = "") -> list[dict]:
    """The tools spec for ``db`` (at most ``max_tools`` entries, generic tools included)."""
    gets, finds, updates, creates = [], [], [], []
    for info in infos:
        owner = "_".join(singular(p) for p in info.path)
        label = words(singular(info.name))
        keys = list(info.key_args)
        gets.append(_entry(
            f"get_{_ident(owner)}_details",
            f"Get the full details of a {label} by its {words(info.id_field)}"
            + (f" (within its {words(singular(info.path[0]))})." if len(info.path) > 1 else "."),
            _key_props(info), keys, "read", {"kind": "get", "path": list(info.path), "keys": keys}))
        if len(info.path) == 1:
            ident = identifying_fields(info)
            if ident:
                names = _arg_names(ident, set())
                props = {names[f.path]: {"type": "string",
                                         "description": f"The {label}'s {words(f.path)}."}
                         for f in ident}
                finds.append(_entry(
                    f"find_{_ident(owner)}_ids",
                    f"Find the {words(info.id_field)}(s) of the {label} whose "
                    + " and ".join(words(f.path) for f in ident) + " match (case-insensitive).",
                    props, list(props), "read",
                    {"kind": "search", "path": list(info.path),
                     "match": {names[f.path]: f.path for f in ident}}))
        ups = []
        for f in updatable_fields(info)[:2]:
            arg = _ident(f.path.split(".")[-1])
            if arg in keys:
                arg = "new_" + arg
            verb = "set" if f.type == "boolean" else "update"
            props = {**_key_props(info), arg: _schema_of(f, f"The new {words(f.path)}.")}
            ups.append(_entry(
                f"{verb}_{_ident(owner)}_{_ident(f.path.replace('.', '_'))}",
                f"Change the {words(f.path)} of a {label}. Returns the updated {label}.",
                props, [*keys, arg], "write",
                {"kind": "update", "path": list(info.path), "keys": keys, "field": f.path,
                 "value_arg": arg}))
        updates.append(ups)
        if len(info.path) > 1:
            fields = creatable_fields(info)
            if fields:
                names = _arg_names(fields, set(keys))
                parent_keys = list(info.parent_id_fields)
                props = {**{k: v for k, v in _key_props(info).items() if k in parent_keys},
                         **{names[f.path]: _schema_of(f, f"The {words(f.path)} of the new "
                                                         f"{label}.") for f in fields}}
                prefix = _ident(singular(info.name))[:4].upper() + "-NEW-"
                creates.append(_entry(
                    f"add_{_ident(owner)}",
                    f"Add a new {label} to a {words(singular(info.path[0]))}; the "
                    f"{words(info.id_field)} is assigned automatically. Returns the new {label}.",
                    props, list(props), "write",
                    {"kind": "create", "path": list(info.path), "keys": parent_keys,
                     "fields": {names[f.path]: f.path for f in fields},
                     "id_field": info.id_field, "id_prefix": prefix,
                     "template": _template(db, info)}))
    generic = [
        _entry("transfer_to_human_agents",
               "Transfer the user to a human agent, with a summary of the user's issue. Only "
               "when the request cannot be handled with the available tools.",
               {"summary": {"type": "string", "description": "A summary of the user's issue."}},
               ["summary"], "generic", {"kind": "generic", "name": "transfer_to_human_agents"}),
        _entry("calculate", "Calculate the result of an arithmetic expression.",
               {"expression": {"type": "string",
                               "description": "Digits, + - * / ( ) . and spaces only."}},
               ["expression"], "generic", {"kind": "generic", "name": "calculate"})]
    budget = max_tools - len(generic)
    out = (gets + finds)[:budget]
    # round-robin the writes over collections so every collection gets some
    writes = []
    for i in range(max((len(u) for u in updates), default=0)):
        writes += [u[i] for u in updates if len(u) > i]
    writes = [w for pair in zip(writes, creates) for w in pair] + writes[len(creates):] \
        + creates[len(writes):]
    out += writes[:max(0, budget - len(out))]
    names = set()
    uniq = []
    for e in out + generic:
        if e["function"]["name"] not in names:
            names.add(e["function"]["name"])
            uniq.append(e)
    return uniq


def tool_index(spec: list[dict]) -> dict:
    """``{("get"|"search"|"update"|"create", path tuple, field or None): entry}``."""
    idx: dict = {}
    for e in spec:
        op = e.get("x-op") or {}
        if op.get("kind") in ("get", "search", "update", "create"):
            idx.setdefault((op["kind"], tuple(op["path"]), op.get("field")), e)
    return idx


def find_tool(spec: list[dict], kind: str, path: tuple,
              field: Optional[str] = None) -> Optional[dict]:
    return tool_index(spec).get((kind, tuple(path), field))
