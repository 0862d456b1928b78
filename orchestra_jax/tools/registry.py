"""Tool registry: JSON-schema tools, validation, OpenAI/Qwen rendering, and the ToolResult record.

A tool call is a plain dict ``{"name": str, "arguments": dict}`` everywhere in the project.
Every tool carries a JSON schema for its arguments (checked with ``jsonschema``), a category
(``basic`` | ``specialist`` | ``generalist``, paper_spec §2.1), an optional pricing key (the
model/service name looked up in a :class:`~orchestra_jax.tools.pricing.PriceSheet`) and an async
executor. :meth:`ToolRegistry.execute` validates, runs and times a call and never raises for bad
input: the policy gets an observation that says what was wrong.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from typing import Any, Awaitable, Callable, Iterable, Mapping, Optional

import jsonschema

CATEGORIES = ("basic", "specialist", "generalist")

# Executors receive the validated arguments dict and return a ToolResult.
Executor = Callable[[dict], Awaitable["ToolResult"]]


@dataclasses.dataclass
class ToolResult:
    """The outcome of one tool call.

    Attributes:
      observation: text shown to the policy.
      cost_usd: money spent by this call in US dollars (expert tokens, search, sandbox seconds).
      latency_s: wall-clock seconds the call took.
      ok: False when the call could not be executed (bad arguments, service failure).
      error: short reason when ``ok`` is False.
      usage: per concrete model, ``{"prompt_tokens": int, "completion_tokens": int}``.
      done: True when the call ends the episode (e.g. ``answer``).
      answer: the extracted final answer, when the call produced one.
      extra: anything else worth recording (query, code, sandbox result, alias...).
    """

    observation: str
    cost_usd: float = 0.0
    latency_s: float = 0.0
    ok: bool = True
    error: Optional[str] = None
    usage: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    done: bool = False
    answer: Optional[str] = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        """A JSON-serialisable dict (``extra`` values that are not JSON become strings)."""
        d = dataclasses.asdict(self)
        d["extra"] = json.loads(json.dumps(self.extra, default=str))
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ToolResult":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})

    @classmethod
    def failure(cls, message: str, *, latency_s: float = 0.0, **extra: Any) -> "ToolResult":
        """A failed call: the observation is the error message itself."""
        return cls(observation=f"Error: {message}", ok=False, error=message, latency_s=latency_s,
                   extra=dict(extra))


def add_usage(total: dict[str, dict[str, int]], model: str, prompt_tokens: int,
              completion_tokens: int) -> None:
    """Adds token counts for ``model`` into a usage dict in place."""
    u = total.setdefault(model, {"prompt_tokens": 0, "completion_tokens": 0})
    u["prompt_tokens"] += int(prompt_tokens)
    u["completion_tokens"] += int(completion_tokens)


@dataclasses.dataclass
class Tool:
    """One tool the policy can call.

    ``parameters`` is a JSON schema of type ``object``; enums in it (e.g. the allowed model
    aliases) are enforced by :meth:`ToolRegistry.validate`. ``pricing_key`` names the model or
    service in the price sheet, when the tool has a single fixed price (meta-tools price per alias).
    """

    name: str
    description: str
    parameters: dict
    category: str = "basic"
    pricing_key: Optional[str] = None
    executor: Optional[Executor] = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("Tool.name must be a non-empty string")
        if self.category not in CATEGORIES:
            raise ValueError(f"Tool {self.name!r}: category must be one of {CATEGORIES}, "
                             f"got {self.category!r}")
        if not isinstance(self.parameters, dict) or self.parameters.get("type") != "object":
            raise ValueError(f"Tool {self.name!r}: parameters must be a JSON schema with "
                             f'"type": "object"')
        try:
            jsonschema.Draft202012Validator.check_schema(self.parameters)
        except jsonschema.SchemaError as e:
            raise ValueError(f"Tool {self.name!r}: invalid JSON schema: {e.message}") from None
        self._validator = jsonschema.Draft202012Validator(self.parameters)

    def validate(self, arguments: Any) -> list[str]:
        """Clear error strings for ``arguments`` (empty list when valid)."""
        if not isinstance(arguments, dict):
            return [f"{self.name}: arguments must be a JSON object, got "
                    f"{type(arguments).__name__}"]
        errors = []
        for err in sorted(self._validator.iter_errors(arguments), key=lambda e: list(e.path)):
            where = ".".join(str(p) for p in err.path)
            if err.validator == "enum":
                msg = (f"argument '{where}' = {err.instance!r} is not allowed; choose one of "
                       f"{list(err.validator_value)}")
            elif err.validator == "required":
                missing = [r for r in err.validator_value if r not in (err.instance or {})]
                msg = f"missing required argument(s) {missing}"
            elif err.validator == "additionalProperties":
                allowed = sorted(self.parameters.get("properties", {}))
                msg = f"{err.message}; allowed arguments: {allowed}"
            elif where:
                msg = f"argument '{where}': {err.message}"
            else:
                msg = err.message
            errors.append(f"{self.name}: {msg}")
        return errors

    def to_openai(self, *, include_enum: bool = True) -> dict:
        """``{"type": "function", "function": {name, description, parameters}}``.

        ``include_enum=False`` strips ``enum`` keys, giving exactly the shape of the release's
        ``tools.json`` (choices listed in the description text only).
        """
        params = copy.deepcopy(self.parameters)
        if not include_enum:
            _strip_key(params, "enum")
        return {"type": "function",
                "function": {"name": self.name, "description": self.description,
                             "parameters": params}}


def _strip_key(obj: Any, key: str) -> None:
    if isinstance(obj, dict):
        obj.pop(key, None)
        for v in obj.values():
            _strip_key(v, key)
    elif isinstance(obj, list):
        for v in obj:
            _strip_key(v, key)


class UnknownToolError(KeyError):
    """A tool name is not in the registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0])


class ToolRegistry:
    """An ordered set of tools (order = the order shown to the policy)."""

    def __init__(self, tools: Iterable[Tool] = ()):
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t)

    def add(self, tool: Tool, *, replace: bool = False) -> None:
        if tool.name in self._tools and not replace:
            raise ValueError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def remove(self, name: str) -> None:
        self.get(name)
        del self._tools[name]

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownToolError(f"unknown tool {name!r}; available tools: "
                                   f"{self.names()}") from None

    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self):
        return iter(self._tools.values())

    def to_openai_tools(self, *, include_enum: bool = True) -> list[dict]:
        """The OpenAI/Qwen ``tools`` list for the chat template."""
        return [t.to_openai(include_enum=include_enum) for t in self._tools.values()]

    def validate(self, name: Any, arguments: Any) -> list[str]:
        """Clear error strings for a call (empty when the call is valid)."""
        if not isinstance(name, str) or name not in self._tools:
            return [f"unknown tool {name!r}; available tools: {self.names()}"]
        return self._tools[name].validate(arguments)

    def validate_call(self, call: Any) -> list[str]:
        """Validates a ``{"name", "arguments"}`` dict, including its exact key set."""
        if not isinstance(call, dict):
            return [f"a tool call must be a JSON object, got {type(call).__name__}"]
        keys = set(call)
        if keys != {"name", "arguments"}:
            return [f"a tool call must have exactly the keys ['arguments', 'name'], got "
                    f"{sorted(map(str, keys))}"]
        return self.validate(call["name"], call["arguments"])

    async def execute(self, call: Mapping[str, Any]) -> ToolResult:
        """Validates and runs one call; never raises (errors become failed ToolResults).

        ``latency_s`` is the measured wall-clock time when the executor did not set one.
        """
        t0 = time.perf_counter()
        errors = self.validate_call(dict(call) if isinstance(call, Mapping) else call)
        if errors:
            return ToolResult.failure("; ".join(errors), latency_s=time.perf_counter() - t0)
        tool = self._tools[call["name"]]
        if tool.executor is None:
            return ToolResult.failure(f"tool {tool.name!r} has no executor here",
                                      latency_s=time.perf_counter() - t0)
        try:
            result = await tool.executor(dict(call["arguments"]))
        except Exception as e:  # noqa: BLE001 - a tool failure is an observation, not a crash
            return ToolResult.failure(f"{tool.name} failed: {type(e).__name__}: {e}",
                                      latency_s=time.perf_counter() - t0)
        if not result.latency_s:
            result.latency_s = time.perf_counter() - t0
        return result
