"""Function tools over a JSON database, the way tau2-bench exposes them.

A :class:`FunctionTool` is a name, a description, a JSON-schema ``parameters`` object (the
OpenAI/Qwen ``tools`` format) and a plain python function ``fn(db, **arguments)`` that reads or
mutates ``db`` (a nested ``dict`` loaded from the domain's ``db.json``/``db.toml``).

A :class:`ToolSet` executes calls the way tau2's ``Environment.get_response`` does:

* the result is serialised to a string observation (``str`` results verbatim, everything else
  ``json.dumps``-ed; numbers become ``str(x)``);
* any failure — unknown tool, arguments that do not match the schema, a domain rule the tool
  enforces (unknown user, wrong order status, insufficient balance, …) — becomes the observation
  ``"Error: <message>"`` with ``ok=False``; nothing raises out of :meth:`ToolSet.execute`.

Two argument-checking modes. ``strict_schema=True`` (default; synthesized domains): arguments are
validated against the JSON schema and integral floats are coerced to ints where the schema says
``integer``. ``strict_schema=False`` (tau2's own domains): like tau2, which calls its python
methods directly, only the argument *names* are checked (a missing required or an unexpected
argument is an error, as python's ``TypeError`` is in tau2) and values reach the tool raw — the
tool itself coerces where tau2 builds a pydantic model (``"3"`` → 3) and otherwise keeps what it
was given (``3.0`` stays a float), so DB hashes come out as in tau2.

Besides tools, a ToolSet may carry *environment functions* (``functions``: task initialisation
helpers such as telecom's ``turn_data_off``, never shown to the agent) and env *assertions*.

Tool functions signal domain errors by raising :class:`ToolError` (``ValueError`` and
``KeyError``/``TypeError`` are also caught and reported, so a buggy argument can never crash an
episode).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

import jsonschema

__all__ = ["ToolError", "FunctionTool", "ToolSet", "ToolCallResult", "to_observation",
           "as_pyd_int", "as_pyd_float"]

# tau2 ToolType values.
READ, WRITE, GENERIC, THINK = "read", "write", "generic", "think"


class ToolError(ValueError):
    """A domain rule rejected the call; the message becomes ``"Error: <message>"``."""


@dataclasses.dataclass(frozen=True)
class FunctionTool:
    """One callable tool.

    ``fn(db, **arguments)`` returns any JSON-serialisable value; ``tool_type`` is tau2's
    read/write/generic/think tag (``write`` tools change the DB); ``requestor`` says who may call
    it (``"assistant"`` for agent tools, ``"user"`` for user-side tools as in telecom).
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    fn: Callable[..., Any]
    tool_type: str = READ
    requestor: str = "assistant"

    def to_openai(self) -> dict:
        """The OpenAI/Qwen ``tools`` entry: ``{"type": "function", "function": {...}}``."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description,
                             "parameters": json.loads(json.dumps(self.parameters))}}

    def with_description(self, description: str) -> "FunctionTool":
        return dataclasses.replace(self, description=description)


@dataclasses.dataclass
class ToolCallResult:
    """Outcome of one executed call: the observation string, whether it succeeded, the error."""

    name: str
    arguments: dict
    observation: str
    ok: bool
    error: Optional[str] = None
    value: Any = None


def to_observation(value: Any) -> str:
    """tau2's ``Environment.to_json_str``: strings verbatim, scalars ``str()``, rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, default=str)


# ---------------------------------------------------------------------------------------------
# pydantic-like coercion (used by tau2-domain tools where tau2 builds a pydantic model)
# ---------------------------------------------------------------------------------------------
def as_pyd_float(value: Any, field: str = "value") -> float:
    """pydantic v2 lax ``float``: numbers and numeric strings (``"2"``, ``" 2.5 "``)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().replace("_", ""))
        except ValueError:
            pass
    raise ToolError(f"{field}: Input should be a valid number, got {value!r}")


def as_pyd_int(value: Any, field: str = "value") -> int:
    """pydantic v2 lax ``int``: ints, bools, whole floats, integer strings (``"3"``, ``"3.0"``)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            return int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                f = None
            if f is not None and f.is_integer() and "e" not in text.lower():
                return int(f)
    raise ToolError(f"{field}: Input should be a valid integer, got {value!r}")




def _coerce_integers(value: Any, schema: Mapping[str, Any]) -> Any:
    """Turn integral floats (``100.0``) into ints where the schema says ``integer``.

    Mirrors pydantic's lax int validation in tau2 so that ``100`` and ``100.0`` give the same DB.
    """
    if not isinstance(schema, Mapping):
        return value
    typ = schema.get("type")
    if typ == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if typ == "object" and isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: _coerce_integers(v, props.get(k, {})) for k, v in value.items()}
    if typ == "array" and isinstance(value, list):
        return [_coerce_integers(v, schema.get("items", {})) for v in value]
    return value


def _schema_errors(arguments: Any, schema: Mapping[str, Any],
                   validator: Optional[jsonschema.protocols.Validator] = None) -> list[str]:
    if not isinstance(arguments, dict):
        return [f"arguments must be a JSON object, got {type(arguments).__name__}"]
    validator = validator or jsonschema.Draft7Validator(schema)
    errors = []
    for err in sorted(validator.iter_errors(arguments), key=lambda e: [str(p) for p in e.path]):
        where = ".".join(str(p) for p in err.path)
        errors.append(f"{where}: {err.message}" if where else err.message)
    allowed = set(schema.get("properties", {}))
    extra = sorted(str(k) for k in set(arguments) - allowed)
    if any(not isinstance(k, str) for k in arguments):
        errors.append("argument names must be strings")
    if extra:
        errors.append(f"unexpected argument(s) {extra}; allowed: {sorted(allowed)}")
    return errors


def _signature_errors(arguments: Any, schema: Mapping[str, Any]) -> list[str]:
    """tau2-style check: names only (missing required / unexpected), like a python call."""
    if not isinstance(arguments, dict):
        return [f"arguments must be a JSON object, got {type(arguments).__name__}"]
    if any(not isinstance(k, str) for k in arguments):
        return ["argument names must be strings"]
    allowed = set(schema.get("properties", {}))
    errors = []
    missing = [k for k in schema.get("required", []) if k not in arguments]
    if missing:
        errors.append(f"missing required argument(s) {missing}")
    extra = sorted(set(arguments) - allowed)
    if extra:
        errors.append(f"unexpected argument(s) {extra}; allowed: {sorted(allowed)}")
    return errors


class ToolSet:
    """An ordered, name-indexed collection of :class:`FunctionTool` plus optional assertions.

    ``assertions`` are tau2 env-assertion functions ``fn(db, **kwargs) -> bool`` (not shown to
    the agent), used by the evaluator for ``ENV_ASSERTION`` reward; ``functions`` are other
    environment functions ``fn(db, **kwargs)`` run by a task's ``initialization_actions``.
    ``strict_schema`` selects the argument-checking mode (module docstring).
    """

    def __init__(self, tools: Iterable[FunctionTool] = (),
                 assertions: Optional[Mapping[str, Callable[..., bool]]] = None,
                 functions: Optional[Mapping[str, Callable[..., Any]]] = None,
                 strict_schema: bool = True):
        self._tools: dict[str, FunctionTool] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"duplicate tool name {tool.name!r}")
            self._tools[tool.name] = tool
        self.assertions: dict[str, Callable[..., bool]] = dict(assertions or {})
        self.functions: dict[str, Callable[..., Any]] = dict(functions or {})
        self.strict_schema = bool(strict_schema)
        self._validators: dict[str, jsonschema.protocols.Validator] = {}

    def _validator(self, tool: FunctionTool) -> jsonschema.protocols.Validator:
        if tool.name not in self._validators:
            self._validators[tool.name] = jsonschema.Draft7Validator(tool.parameters)
        return self._validators[tool.name]

    # -- container protocol -------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[FunctionTool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolSet({self.names()})"

    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> FunctionTool:
        if name not in self._tools:
            raise KeyError(f"unknown tool {name!r}; available: {self.names()}")
        return self._tools[name]

    def to_openai_tools(self) -> list[dict]:
        """The ``tools`` list for a chat template / OpenAI API, in insertion order."""
        return [t.to_openai() for t in self._tools.values()]

    def _like(self, tools: Iterable[FunctionTool]) -> "ToolSet":
        return ToolSet(tools, self.assertions, self.functions, self.strict_schema)

    def without(self, *names: str) -> "ToolSet":
        return self._like([t for t in self if t.name not in names])

    def plus(self, *tools: FunctionTool) -> "ToolSet":
        return self._like([*self, *tools])

    def write_tool_names(self) -> set[str]:
        return {t.name for t in self if t.tool_type == WRITE}

    # -- execution ------------------------------------------------------------------------
    def validate(self, name: str, arguments: Any) -> list[str]:
        """Clear error strings for a call (empty list when the call is well-formed)."""
        if name not in self._tools:
            return [f"Tool '{name}' not found. Available tools: {self.names()}"]
        tool = self._tools[name]
        if not self.strict_schema:
            return _signature_errors(arguments, tool.parameters)
        return _schema_errors(arguments, tool.parameters, self._validator(tool))

    def execute(self, db: dict, name: str, arguments: Any) -> ToolCallResult:
        """Run ``name(**arguments)`` on ``db`` (mutating it for write tools). Never raises."""
        args_copy = arguments if isinstance(arguments, dict) else {}
        if not isinstance(name, str) or name not in self._tools:
            msg = f"Tool '{name}' not found."
            return ToolCallResult(str(name), args_copy, f"Error: {msg}", False, msg)
        tool = self._tools[name]
        try:
            errors = self.validate(name, arguments)
            if errors:
                msg = f"invalid arguments for {name}: " + "; ".join(errors)
                return ToolCallResult(name, args_copy, f"Error: {msg}", False, msg)
            kwargs = json.loads(json.dumps(arguments))
            if self.strict_schema:
                kwargs = _coerce_integers(kwargs, tool.parameters)
        except (TypeError, ValueError, RecursionError) as e:
            msg = f"invalid arguments for {name}: not JSON data ({e})"
            return ToolCallResult(name, args_copy, f"Error: {msg}", False, msg)
        try:
            value = tool.fn(db, **kwargs)
            observation = to_observation(value)
        except (ToolError, ValueError, KeyError, TypeError, ArithmeticError, RecursionError) as e:
            msg = str(e) if not isinstance(e, KeyError) else f"not found: {e}"
            return ToolCallResult(name, args_copy, f"Error: {msg}", False, msg)
        except Exception as e:  # a bug in a tool must not crash an episode
            msg = f"internal error in {name}: {type(e).__name__}: {e}"
            return ToolCallResult(name, args_copy, f"Error: {msg}", False, msg)
        return ToolCallResult(name, args_copy, observation, True, None, value)

    def run_assertion(self, db: dict, name: str, arguments: Mapping[str, Any]) -> bool:
        """Evaluate one env assertion; unknown assertion → ``ValueError``. A non-bool result
        is an error (tau2 rejects it too)."""
        if name in self.assertions:
            result = self.assertions[name](db, **arguments)
            if not isinstance(result, bool):
                raise ValueError(f"assertion {name} returned {type(result).__name__}, not bool")
            return result
        raise ValueError(f"unknown env assertion {name!r}; known: {sorted(self.assertions)}")

    def has_function(self, name: str) -> bool:
        return name in self.functions or name in self.assertions or name in self._tools

    def run_function(self, db: dict, name: str, arguments: Mapping[str, Any]) -> Any:
        """Run an environment function (tau2 ``run_env_function_call``): an init helper, an
        assertion or a tool, called directly — failures raise (a broken task, not an
        observation)."""
        fn = (self.functions.get(name) or self.assertions.get(name)
              or (self._tools[name].fn if name in self._tools else None))
        if fn is None:
            raise ValueError(f"unknown environment function {name!r}; known: "
                             f"{sorted({*self.functions, *self.assertions, *self._tools})}")
        return fn(db, **dict(arguments))


_SCHEMA_FILE = "tool_schemas_airline_retail.json"


def load_schema_file(domain: str) -> list[dict]:
    """The bundled tau2-bench v0.1.3 tool schemas for ``domain`` (``airline`` or ``retail``).

    ``data/tool_schemas_airline_retail.json`` is a copy of
    ``shared/data/tau2/tool_schemas_airline_retail.derived.json`` (MIT, Sierra Research).
    """
    import importlib.resources

    text = importlib.resources.files(__package__).joinpath("data", _SCHEMA_FILE).read_text()
    schemas = json.loads(text)
    if domain not in schemas:
        raise KeyError(f"no bundled tool schemas for domain {domain!r}; have {sorted(schemas)}")
    return schemas[domain]


def tools_from_schemas(schemas: Iterable[Mapping[str, Any]],
                       functions: Mapping[str, Callable[..., Any]]) -> list[FunctionTool]:
    """Pair OpenAI-format schemas (with tau2's ``x-tool-type``) with python implementations.

    Every schema must have an implementation and vice versa; a mismatch is a programming error
    and raises ``ValueError`` naming the offenders.
    """
    schemas = list(schemas)
    names = [s["function"]["name"] for s in schemas]
    missing = sorted(set(names) - set(functions))
    unused = sorted(set(functions) - set(names))
    if missing or unused:
        raise ValueError(f"schema/implementation mismatch: no implementation for {missing}, "
                         f"no schema for {unused}")
    tools = []
    for s in schemas:
        f = s["function"]
        tools.append(FunctionTool(name=f["name"], description=f.get("description", ""),
                                  parameters=f.get("parameters", {"type": "object", "properties": {}}),
                                  fn=functions[f["name"]],
                                  tool_type=str(s.get("x-tool-type", READ)).lower()))
    return tools
