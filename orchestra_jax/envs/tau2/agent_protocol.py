"""The agent side of a tau2 episode: what the agent is told and how its actions are read.

* tau2's agent system prompt (``<instructions>`` + ``<policy>``), the release's format
  instruction, and the expert-mode policy rewrite + ``call_expert`` schema (paper_spec §2.5);
* action normalisation: any accepted action form → ``(tool calls, message text)``, with malformed
  calls kept as ``_error`` entries that become observations (never exceptions).
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Optional, Sequence

AGENT_INSTRUCTION = """You are a customer service agent that helps the user according to the <policy> provided below.
In each turn you can either:
- Send a message to the user.
- Make a tool call.
You cannot do both at the same time.

Try to be helpful and always follow the policy. Always make sure you generate valid JSON only."""

GREETING = "Hi! How can I help you today?"

FORMAT_INSTRUCTION = ("Wrap thinking process between <think> </think>, message between <message> "
                      "</message> and the tool call between <tool_call> </tool_call>")

EXPERT_POLICY = ("You should call an expert with the call_expert tool when you are not confident "
                 "that you can handle the request correctly within the scope of your actions, or "
                 "when the user explicitly asks for a human agent. Choose the expert according to "
                 "the difficulty of the task and the cost of each expert. The expert sees the whole "
                 "conversation and the domain tools, and its message or tool call is taken as your "
                 "action for that turn.")

_TRANSFER_PARAGRAPH = re.compile(
    r"^[ \t]*(?:You should )?transfer the user to a human agent if and only if[^\n]*$",
    re.IGNORECASE | re.MULTILINE)
_HOLD_SENTENCE = re.compile(
    r"(?:,? ?and )?(?:then )?send(?:s)?(?: the message)?:? ?'?YOU ARE BEING TRANSFERRED TO A HUMAN "
    r"AGENT\. PLEASE HOLD ON\.'?(?: to the user)?\.?", re.IGNORECASE)
_PHRASES = [
    (re.compile(r"transfer_to_human_agents"), "call_expert"),
    (re.compile(r"transfer(?:ring)?(?: the user)? to (?:a |the )?human agents?", re.IGNORECASE),
     "call an expert"),
    (re.compile(r"\b(?:a )?transfer is needed\b", re.IGNORECASE), "calling an expert is needed"),
]


def rewrite_policy_for_experts(policy: str) -> str:
    """Replace the policy's "transfer to a human agent" paragraph by :data:`EXPERT_POLICY` and
    re-word remaining transfer mentions to calling an expert (heuristic regexes; the release used
    26 literal strings)."""
    text, n = _TRANSFER_PARAGRAPH.subn(EXPERT_POLICY, policy, count=1)
    if n == 0:
        text = text.rstrip() + "\n\n" + EXPERT_POLICY + "\n"
    text = _HOLD_SENTENCE.sub("", text)
    for pat, repl in _PHRASES:
        text = pat.sub(repl, text)
    return text


def agent_system_prompt(policy: str, *, format_instruction: bool = False) -> str:
    """tau2's agent system prompt: ``<instructions>…</instructions>\\n<policy>…</policy>``."""
    prompt = f"<instructions>\n{AGENT_INSTRUCTION}\n</instructions>\n<policy>\n{policy}\n</policy>"
    if format_instruction:
        prompt += "\n" + FORMAT_INSTRUCTION
    return prompt


def call_expert_schema(aliases: Sequence[str], mapping: Any = None, prices: Any = None) -> dict:
    """JSON-schema ``parameters`` + description of ``call_expert``. With a ModelMapping and a
    PriceSheet the description carries the release's price/latency table (tools.meta_tools)."""
    if mapping is not None and prices is not None:
        from orchestra_jax.tools.meta_tools import call_expert_tool
        tool = call_expert_tool(mapping, prices)
        params = json.loads(json.dumps(tool.parameters))
        params["properties"]["expert"]["enum"] = [
            a for a in params["properties"]["expert"].get("enum", aliases) if a in aliases]
        return {"description": tool.description, "parameters": params}
    return {"description": ("Hand the current turn to an expert agent: the expert sees the whole "
                            "conversation and the domain tools, and its message or tool call is "
                            "taken as your action. Call it when you are not confident; choose the "
                            "expert by the task difficulty and the cost."),
            "parameters": {"type": "object", "required": ["expert"],
                           "properties": {"expert": {"type": "string", "enum": list(aliases),
                                                     "description": "The expert to call."}}}}


def _call_id(n: int) -> str:
    return f"call_{n}"


def _normalise_calls(raw: Any) -> list[dict]:
    """``[{"name": str, "arguments": dict}]``; a malformed call keeps an ``_error`` (shown to the
    agent as the call's observation, never raised): non-string name, arguments that are not a
    JSON object, or a ``parse_error`` set by the expert client."""
    if raw is None:
        return []
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, (list, tuple)):
        return [{"name": "", "arguments": {}, "_error": f"tool_calls must be a list, got {raw!r:.80}"}]
    calls = []
    for c in raw:
        if not isinstance(c, Mapping):
            calls.append({"name": "", "arguments": {}, "_error": f"not a call object: {c!r:.80}"})
            continue
        fn = c.get("function") if isinstance(c.get("function"), Mapping) else c
        name, args = fn.get("name"), fn.get("arguments", {})
        if not isinstance(name, str):
            calls.append({"name": "", "arguments": {},
                          "_error": f"the tool name must be a string, got {name!r:.80}"})
            continue
        if c.get("parse_error"):
            calls.append({"name": name, "arguments": {}, "_error": str(c["parse_error"])})
            continue
        if args is None:
            args = {}
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except (json.JSONDecodeError, RecursionError) as e:
                calls.append({"name": name, "arguments": {},
                              "_error": f"arguments are not valid JSON: {e}"})
                continue
        if not isinstance(args, Mapping):
            calls.append({"name": name, "arguments": {}, "_error":
                          f"arguments must be a JSON object, got {type(args).__name__}"})
            continue
        calls.append({"name": name, "arguments": dict(args)})
    return calls


def _split_action(action: Any) -> tuple[list[dict], Optional[str]]:
    """(tool calls, message text) of an action in any accepted form."""
    if isinstance(action, str):
        return [], action
    if isinstance(action, Mapping):
        calls = _normalise_calls(action.get("tool_calls") or action.get("calls"))
        text = action.get("message")
        if text is None:
            text = action.get("content", action.get("text"))
        return calls, text
    calls = _normalise_calls(getattr(action, "calls", None) or getattr(action, "tool_calls", None))
    text = getattr(action, "message", None)
    if text is None:
        text = getattr(action, "content", None) or getattr(action, "text", None)
    return calls, text
