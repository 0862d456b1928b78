"""The schema of a keyed JSON database, inferred from its entries, and entry validation.

ToolScale databases (``shared/data/toolscale_envs/<domain>/db.json``) are objects of
*collections*: ``{"clients": {"03DZE1C1": {"client_id": "03DZE1C1", ...}, ...}, ...}``. A
collection is a non-empty object whose values are objects that (almost) all store their own key
in one field, the *id field*; collections nest (a client's ``accounts``).

:func:`infer_collections` finds them (top level and one level down) with per-field statistics;
:func:`collection_json_schema` turns one into a JSON schema (majority type per field, ``null``
allowed where seen); :func:`validate_entries` is the programmatic version of the paper's entry
check (paper_spec §5.1 step 1.2): (1) the entry matches the schema's fields and types, (2) ids
are consistent (key == id field; fields named after another collection's id field reference an
existing entry), (3) the id is not empty. (The paper's third, LLM-judged condition — "logical,
natural content" — only the LLM driver checks.)
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Iterable, Optional

import jsonschema

__all__ = ["FieldInfo", "CollectionInfo", "infer_collections", "collection_json_schema",
           "validate_entries", "ValidationReport", "json_type", "iter_records"]

_MAX_ENUM = 8          # [ours] a string field with at most this many distinct values is categorical
_MAX_DEPTH = 3         # [ours] dotted depth of leaf fields considered
_ID_MATCH = 0.75       # [ours] share of entries whose id field equals their key


def json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """Statistics of one dotted leaf field over a collection's entries."""

    path: str
    type: str                       # majority non-null JSON type
    nullable: bool
    present: int                    # entries that have it
    total: int
    n_distinct: int
    values: tuple = ()              # distinct values (sorted) when categorical, else ()

    @property
    def required(self) -> bool:
        return self.present == self.total

    @property
    def categorical(self) -> bool:
        return bool(self.values)

    @property
    def unique_ratio(self) -> float:
        return self.n_distinct / max(self.present, 1)


@dataclasses.dataclass(frozen=True)
class CollectionInfo:
    """A keyed collection: ``path`` = collection names outermost first (``("clients",
    "accounts")``), ``parent_id_fields`` = id field of each enclosing collection."""

    path: tuple
    id_field: str
    n_entries: int
    fields: dict
    parent_id_fields: tuple = ()

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def key_args(self) -> tuple:
        """Argument names addressing one entry: the parents' id fields, then ours."""
        return (*self.parent_id_fields, self.id_field)


def _id_field(table: Any) -> Optional[str]:
    if not isinstance(table, dict) or not table:
        return None
    if not all(isinstance(v, dict) for v in table.values()):
        return None
    counts: collections.Counter = collections.Counter()
    for key, rec in table.items():
        for f, v in rec.items():
            if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v) == str(key):
                counts[f] += 1
    if not counts:
        return None
    field, n = counts.most_common(1)[0]
    return field if n >= _ID_MATCH * len(table) else None


def _leaves(rec: dict, prefix: str = "", depth: int = 1) -> Iterable[tuple[str, Any]]:
    for k, v in rec.items():
        if not isinstance(k, str):
            continue
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            if depth < _MAX_DEPTH and _id_field(v) is None:
                yield from _leaves(v, path + ".", depth + 1)
        elif not isinstance(v, list):
            yield path, v


def _field_stats(records: list[dict]) -> dict:
    seen: dict[str, list] = collections.defaultdict(list)
    for rec in records:
        for path, v in _leaves(rec):
            seen[path].append(v)
    out = {}
    for path, vals in seen.items():
        types = collections.Counter(json_type(v) for v in vals if v is not None)
        typ = types.most_common(1)[0][0] if types else "null"
        if typ == "integer" and "number" in types:
            typ = "number"
        distinct = {json_type(v) + ":" + str(v) for v in vals if v is not None}
        values: tuple = ()
        if typ in ("string", "boolean") and 2 <= len(distinct) <= _MAX_ENUM and len(vals) >= 4:
            values = tuple(sorted({v for v in vals if v is not None}, key=str))
        out[path] = FieldInfo(path, typ, any(v is None for v in vals), len(vals), len(records),
                              len(distinct), values)
    return out


def iter_records(db: dict, info: CollectionInfo) -> Iterable[tuple[tuple, dict]]:
    """``(keys, entry)`` for every entry of the collection (keys address it from the top)."""
    def walk(node: Any, path: tuple, keys: tuple):
        table = node.get(path[0]) if isinstance(node, dict) else None
        if not isinstance(table, dict):
            return
        for key, rec in table.items():
            if not isinstance(rec, dict):
                continue
            if len(path) == 1:
                yield (*keys, key), rec
            else:
                yield from walk(rec, path[1:], (*keys, key))
    yield from walk(db, tuple(info.path), ())


def infer_collections(db: dict) -> list[CollectionInfo]:
    """Top-level keyed collections and the keyed collections nested directly in their entries."""
    if not isinstance(db, dict):
        raise ValueError(f"database must be a JSON object, got {type(db).__name__}")
    out = []
    for name in sorted(db):
        id_field = _id_field(db[name])
        if id_field is None:
            continue
        records = list(db[name].values())
        top = CollectionInfo((name,), id_field, len(records), _field_stats(records))
        out.append(top)
        nested_names = collections.Counter(
            k for rec in records for k, v in rec.items() if _id_field(v) is not None)
        for sub in sorted(nested_names):
            if nested_names[sub] < max(2, len(records) // 4):
                continue
            sub_records = [r for rec in records if isinstance(rec.get(sub), dict)
                           for r in rec[sub].values() if isinstance(r, dict)]
            sub_ids = collections.Counter(_id_field(rec.get(sub)) for rec in records
                                          if isinstance(rec.get(sub), dict))
            sub_id = sub_ids.most_common(1)[0][0]
            if sub_id is None or not sub_records:
                continue
            out.append(CollectionInfo((name, sub), sub_id, len(sub_records),
                                      _field_stats(sub_records), (id_field,)))
    return out


def collection_json_schema(info: CollectionInfo) -> dict:
    """JSON schema of one entry (leaf fields only; nested keyed collections not described)."""
    root: dict = {"type": "object", "properties": {}, "required": []}
    prefixes = {".".join(f.path.split(".")[:i]) for f in info.fields.values()
                for i in range(1, f.path.count(".") + 1)}
    for f in info.fields.values():
        if f.path in prefixes:   # null here, an object elsewhere: the object node allows null
            continue
        node = root
        parts = f.path.split(".")
        for i, part in enumerate(parts[:-1]):
            props = node.setdefault("properties", {})
            prefix = ".".join(parts[:i + 1])
            typ = ["object", "null"] if prefix in info.fields else "object"
            node = props.setdefault(part, {"type": typ, "properties": {}, "required": []})
        leaf: dict = {"type": [f.type, "null"] if f.nullable and f.type != "null" else f.type}
        if f.type == "number":
            leaf["type"] = ["number", "null"] if f.nullable else "number"
        node.setdefault("properties", {})[parts[-1]] = leaf
        if f.required:
            node.setdefault("required", []).append(parts[-1])
    return root


@dataclasses.dataclass
class ValidationReport:
    """Which entries passed; ``problems`` holds ``(collection path, keys, message)`` per failure."""

    valid: dict = dataclasses.field(default_factory=dict)    # "/".join(path) -> set of keys
    problems: list = dataclasses.field(default_factory=list)
    checked: int = 0

    def is_valid(self, info: CollectionInfo, keys: tuple) -> bool:
        return tuple(keys) in self.valid.get("/".join(info.path), set())


def validate_entries(db: dict, infos: list[CollectionInfo]) -> ValidationReport:
    report = ValidationReport()
    top_ids = {i.id_field: set(db[i.path[0]]) for i in infos if len(i.path) == 1}
    for info in infos:
        validator = jsonschema.Draft7Validator(collection_json_schema(info))
        ok = report.valid.setdefault("/".join(info.path), set())
        for keys, rec in iter_records(db, info):
            report.checked += 1
            msgs = [e.message for e in validator.iter_errors(rec)][:3]
            if str(rec.get(info.id_field)) != str(keys[-1]):
                msgs.append(f"{info.id_field}={rec.get(info.id_field)!r} differs from its key "
                            f"{keys[-1]!r}")
            for field, ids in top_ids.items():
                if field != info.id_field and isinstance(rec.get(field), str) \
                        and rec[field] not in ids:
                    msgs.append(f"{field} {rec[field]!r} references no entry")
            if rec.get(info.id_field) in (None, ""):
                msgs.append(f"{info.id_field} is empty")
            if msgs:
                report.problems.append((info.path, keys, "; ".join(msgs)))
            else:
                ok.add(tuple(keys))
    return report
