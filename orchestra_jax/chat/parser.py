"""Parsing one policy turn: ``<think>``, ``<tool_call>`` blocks and tau2-style ``<message>``.

:func:`parse_tool_calls` never raises. Whatever the text (unclosed or nested tags, broken JSON,
JSON with trailing text, wrong keys, unknown tools, arguments that break the JSON schema, huge or
deeply nested input, lone surrogates), the result says what was wrong in ``errors`` and
:meth:`ParsedTurn.error_observation` turns that into a clear observation for the policy.

Format rules (paper_spec §2.5 [C]): a call is ``<tool_call>{"name": ..., "arguments": {...}}
</tool_call>`` whose JSON object has exactly the keys ``name`` and ``arguments``, whose name is a
known tool and whose arguments validate against the tool's JSON schema (enums of model aliases
included). A tool repeated within one turn is flagged (``repeated_tools``) and its repeats are
dropped. ``format_ok`` is True when the turn has no error and at least one valid call (or, with
``allow_message=True``, a ``<message>`` instead).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import jsonschema

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
MSG_OPEN, MSG_CLOSE = "<message>", "</message>"
END_MARKERS = ("<|im_end|>", "<|endoftext|>")
MAX_SNIPPET = 160  # characters of offending text quoted in an error
MAX_ERRORS = 8  # errors reported per turn (the rest are counted)
MAX_CALLS = 16  # <tool_call> blocks examined per turn
_BAD = object()  # "this block already produced an error"

CALL_FORMAT_HINT = ('Call a tool as <tool_call>\n{"name": <tool-name>, "arguments": '
                    '<args-json-object>}\n</tool_call>')


def _snip(s: str) -> str:
    s = s.strip()
    if len(s) > MAX_SNIPPET:
        s = s[:MAX_SNIPPET] + f"... ({len(s)} chars)"
    return ascii(s)[1:-1] if any(0xD800 <= ord(c) <= 0xDFFF for c in s) else s


class ToolSchemas:
    """Tool names and compiled argument validators, built from any of:

    * an object with ``names()`` and ``validate(name, arguments) -> list[str]``
      (e.g. :class:`orchestra_jax.tools.registry.ToolRegistry`);
    * a list of OpenAI-format tools (``{"type": "function", "function": {name, parameters}}``)
      or of ``{"name", "parameters"}`` dicts;
    * a dict ``{name: parameters_schema}``.
    """

    def __init__(self, spec: Any):
        self._registry = None
        self._validators: dict[str, jsonschema.protocols.Validator] = {}
        if spec is None:
            raise ValueError("tool schemas are required (a registry, a tools list or a dict)")
        if hasattr(spec, "names") and hasattr(spec, "validate") and callable(spec.validate):
            self._registry = spec
            self._names = list(spec.names())
            return
        if isinstance(spec, Mapping):
            items = list(spec.items())
        else:
            items = []
            for t in spec:
                f = t.get("function", t) if isinstance(t, Mapping) else None
                if not isinstance(f, Mapping) or "name" not in f:
                    raise ValueError(f"not a tool schema: {t!r}")
                items.append((f["name"], f.get("parameters") or {"type": "object"}))
        self._names = [n for n, _ in items]
        for name, schema in items:
            jsonschema.Draft202012Validator.check_schema(schema)
            self._validators[name] = jsonschema.Draft202012Validator(schema)

    @classmethod
    def of(cls, spec: Any) -> "ToolSchemas":
        return spec if isinstance(spec, ToolSchemas) else cls(spec)

    def names(self) -> list[str]:
        return list(self._names)

    def validate(self, name: str, arguments: Any) -> list[str]:
        """Clear error strings (empty when valid)."""
        if self._registry is not None:
            return list(self._registry.validate(name, arguments))
        if name not in self._validators:
            return [f"unknown tool {_snip(repr(name))}; available tools: {self._names}"]
        if not isinstance(arguments, dict):
            return [f"{name}: arguments must be a JSON object, got {type(arguments).__name__}"]
        errs = []
        for e in sorted(self._validators[name].iter_errors(arguments), key=lambda e: list(e.path)):
            where = ".".join(str(p) for p in e.path)
            if e.validator == "enum":
                msg = (f"argument '{where}' = {_snip(repr(e.instance))} is not allowed; choose one "
                       f"of {list(e.validator_value)}")
            else:
                msg = (f"argument '{where}': " if where else "") + _snip(e.message)
            errs.append(f"{name}: {msg}")
        return errs


@dataclasses.dataclass
class ParsedTurn:
    """One parsed policy turn.

    Attributes:
      thinking: text inside ``<think>…</think>`` (``""`` when absent).
      content: the visible text: after ``</think>``, without ``<tool_call>`` blocks, stripped.
      calls: valid calls ``{"name": str, "arguments": dict}`` in order (first of each tool).
      format_ok: no error and at least one valid call (or an allowed ``<message>``).
      errors: clear, human-readable problems (empty when format_ok).
      repeated_tools: tool names called more than once in this turn.
      message: text of the ``<message>…</message>`` block(s), or None.
      n_blocks: number of ``<tool_call>`` blocks found (valid or not).
    """

    thinking: str = ""
    content: str = ""
    calls: list[dict] = dataclasses.field(default_factory=list)
    format_ok: bool = False
    errors: list[str] = dataclasses.field(default_factory=list)
    repeated_tools: list[str] = dataclasses.field(default_factory=list)
    message: Optional[str] = None
    n_blocks: int = 0

    def error_observation(self) -> str:
        """The observation shown to the policy when the turn was malformed."""
        if not self.errors:
            return ""
        lines = "\n".join(f"- {e}" for e in self.errors)
        return f"Format error in your last turn:\n{lines}\n{CALL_FORMAT_HINT}"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _strip_end(text: str) -> str:
    changed = True
    while changed:
        changed = False
        t = text.rstrip()
        for m in END_MARKERS:
            if t.endswith(m):
                text, changed = t[: -len(m)], True
    return text


def _split_thinking(text: str, errors: list[str]) -> tuple[str, str]:
    if THINK_CLOSE in text:
        head, _, rest = text.partition(THINK_CLOSE)
        if THINK_OPEN in head:
            pre, _, head = head.partition(THINK_OPEN)
            if pre.strip():
                errors.append(f"text before <think>: {_snip(pre)}")
        if THINK_OPEN in rest or THINK_CLOSE in rest:
            errors.append("more than one <think> block")
        return head.strip("\n"), rest
    if THINK_OPEN in text:
        pre, _, head = text.partition(THINK_OPEN)
        errors.append("unclosed <think> block (no </think>)")
        return head.strip("\n"), pre
    return "", text


_TAG_RE = re.compile(r"</?tool_call>")


def _blocks(text: str, errors: list[str]) -> tuple[list[str], str]:
    """Splits out <tool_call> blocks; returns (blocks, text outside them)."""
    blocks, outside, pos, open_at = [], [], 0, None
    for m in _TAG_RE.finditer(text):
        tag = m.group(0)
        if tag == CALL_OPEN:
            if open_at is not None:
                errors.append("nested <tool_call> (a <tool_call> inside another one); close each "
                              "call with </tool_call> before opening the next")
                open_at = m.end()  # recover: the inner block is the one that counts
                continue
            outside.append(text[pos:m.start()])
            open_at = m.end()
        else:
            if open_at is None:
                errors.append("</tool_call> without a matching <tool_call>")
                outside.append(text[pos:m.start()])
                pos = m.end()
                continue
            blocks.append(text[open_at:m.start()])
            open_at = None
            pos = m.end()
    if open_at is not None:
        errors.append(f"unclosed <tool_call> (no </tool_call>): {_snip(text[open_at:])}")
        pos = len(text)
    outside.append(text[pos:])
    return blocks, "".join(outside)


def _decode_call(block: str, idx: int, errors: list[str]) -> Any:
    s = block.strip()
    if not s:
        errors.append(f"tool call {idx}: empty <tool_call> block")
        return _BAD
    if s.startswith("```"):  # tolerate nothing: say what is wrong
        errors.append(f"tool call {idx}: put raw JSON inside <tool_call>, not a ``` code fence")
        return _BAD
    try:
        obj, end = json.JSONDecoder().raw_decode(s)
    except json.JSONDecodeError as e:
        errors.append(f"tool call {idx}: invalid JSON ({e.msg} at char {e.pos}): {_snip(s)}")
        return _BAD
    except RecursionError:
        errors.append(f"tool call {idx}: JSON nested too deeply")
        return _BAD
    if s[end:].strip():
        errors.append(f"tool call {idx}: unexpected text after the JSON object: {_snip(s[end:])}")
        return _BAD
    return obj


def _check_call(obj: Any, idx: int, schemas: ToolSchemas, errors: list[str]) -> Optional[dict]:
    if not isinstance(obj, dict):
        errors.append(f"tool call {idx}: must be a JSON object, got {type(obj).__name__}")
        return None
    keys = set(obj)
    if keys != {"name", "arguments"}:
        missing = sorted({"name", "arguments"} - keys)
        extra = sorted(map(str, keys - {"name", "arguments"}))
        why = "; ".join(x for x in (f"missing {missing}" if missing else "",
                                    f"unexpected {[_snip(k) for k in extra]}" if extra else "") if x)
        errors.append(f'tool call {idx}: keys must be exactly "name" and "arguments" ({why})')
        return None
    name, args = obj["name"], obj["arguments"]
    if not isinstance(name, str):
        errors.append(f'tool call {idx}: "name" must be a string, got {type(name).__name__}')
        return None
    if name not in schemas.names():
        errors.append(f"tool call {idx}: unknown tool {_snip(repr(name))}; available tools: "
                      f"{schemas.names()}")
        return None
    if not isinstance(args, dict):
        errors.append(f'tool call {idx}: "arguments" of {name} must be a JSON object, got '
                      f"{type(args).__name__}")
        return None
    try:
        problems = schemas.validate(name, args)
    except RecursionError:
        problems = [f"{name}: arguments nested too deeply"]
    if problems:
        errors.extend(f"tool call {idx}: {_snip(p)}" for p in problems)
        return None
    return {"name": name, "arguments": args}


def _messages(text: str, errors: list[str]) -> tuple[Optional[str], str]:
    if MSG_OPEN not in text and MSG_CLOSE not in text:
        return None, text
    found, outside, rest = [], [], text
    while MSG_OPEN in rest:
        pre, _, after = rest.partition(MSG_OPEN)
        outside.append(pre)
        if MSG_CLOSE not in after:
            errors.append("unclosed <message> (no </message>)")
            found.append(after)
            rest = ""
            break
        body, _, rest = after.partition(MSG_CLOSE)
        found.append(body)
    if MSG_CLOSE in rest:
        errors.append("</message> without a matching <message>")
        rest = rest.replace(MSG_CLOSE, "")
    outside.append(rest)
    msg = "\n".join(b.strip() for b in found).strip()
    return (msg if found else None), "".join(outside)


def _parse(text: str, schemas: ToolSchemas, require_call: bool, allow_message: bool) -> ParsedTurn:
    errors: list[str] = []
    text = _strip_end(text)
    thinking, rest = _split_thinking(text, errors)
    blocks, outside = _blocks(rest, errors)
    message, outside = _messages(outside, errors) if allow_message else (None, outside)
    calls: list[dict] = []
    seen: dict[str, int] = {}
    repeated: list[str] = []
    if len(blocks) > MAX_CALLS:
        errors.append(f"too many tool calls in one turn ({len(blocks)}; at most {MAX_CALLS} are read)")
    for i, block in enumerate(blocks[:MAX_CALLS], start=1):
        obj = _decode_call(block, i, errors)
        if obj is _BAD:
            continue
        call = _check_call(obj, i, schemas, errors)
        if call is None:
            continue
        if call["name"] in seen:
            if call["name"] not in repeated:
                repeated.append(call["name"])
                errors.append(f"tool {call['name']!r} called more than once in one turn; only the "
                              "first call is run")
            continue
        seen[call["name"]] = i
        calls.append(call)
    if require_call and not blocks and not (allow_message and message):
        errors.append("no tool call found" + (" and no <message>" if allow_message else ""))
    if allow_message and message is not None and not message and not calls:
        errors.append("empty <message>")
    if len(errors) > MAX_ERRORS:
        errors = errors[:MAX_ERRORS] + [f"... and {len(errors) - MAX_ERRORS} more errors"]
    ok = not errors and (bool(calls) or (allow_message and bool(message)) or not require_call)
    return ParsedTurn(thinking=thinking, content=outside.strip(), calls=calls, format_ok=ok,
                      errors=errors, repeated_tools=repeated, message=message, n_blocks=len(blocks))


def parse_tool_calls(text: Any, registry_or_schemas: Union[ToolSchemas, Any], *,
                     require_call: bool = True, allow_message: bool = False,
                     max_chars: int = 200_000) -> ParsedTurn:
    """Parses one policy turn (decoded text). Never raises.

    Args:
      text: the decoded turn (a trailing ``<|im_end|>`` is ignored).
      registry_or_schemas: a ToolRegistry, an OpenAI ``tools`` list, a ``{name: schema}`` dict or
        a prebuilt :class:`ToolSchemas` (fastest when parsing many turns).
      require_call: a turn without any call is a format error.
      allow_message: tau2 mode: ``<message>…</message>`` is extracted and counts as an action.
      max_chars: longer text is cut to this many characters first (an error says so).
    """
    try:
        schemas = ToolSchemas.of(registry_or_schemas)
    except Exception as e:  # noqa: BLE001 - bad schemas are the caller's bug, still no crash here
        return ParsedTurn(errors=[f"tool schemas unusable: {type(e).__name__}: {_snip(str(e))}"])
    try:
        if not isinstance(text, str):
            if isinstance(text, (bytes, bytearray)):
                text = bytes(text).decode("utf-8", errors="replace")
            else:
                return ParsedTurn(errors=[f"turn text must be a string, got {type(text).__name__}"])
        cut = len(text) > max_chars
        turn = _parse(text[:max_chars], schemas, require_call, allow_message)
        if cut:
            turn.errors.append(f"turn longer than {max_chars} characters was cut")
            turn.format_ok = False
        return turn
    except Exception as e:  # noqa: BLE001 - last-resort guard: a parser bug must not kill rollouts
        return ParsedTurn(errors=[f"could not parse the turn ({type(e).__name__})"])


def tool_names(spec: Any) -> list[str]:
    """Names of the tools in any schema spec accepted by :func:`parse_tool_calls`."""
    return ToolSchemas.of(spec).names()


def format_tool_call(call: Mapping[str, Any]) -> str:
    """Canonical text of one call, as Qwen3's template renders it (without the enclosing tags)."""
    return json.dumps({"name": call["name"], "arguments": call["arguments"]}, ensure_ascii=False)


def iter_texts(turns: Iterable[str], spec: Any, **kw: Any) -> list[ParsedTurn]:
    """Parses several turns with one compiled schema set."""
    schemas = ToolSchemas.of(spec)
    return [parse_tool_calls(t, schemas, **kw) for t in turns]


__all__: Sequence[str] = ("ParsedTurn", "ToolSchemas", "parse_tool_calls", "tool_names",
                          "format_tool_call", "CALL_FORMAT_HINT")
