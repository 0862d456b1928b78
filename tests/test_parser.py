"""Tool-call parser: valid turns, every malformed kind, and 10,000 generated malformed strings."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestra_jax.chat.parser import ParsedTurn, ToolSchemas, parse_tool_calls

TOOLS = [
    {"type": "function", "function": {
        "name": "search", "description": "search",
        "parameters": {"type": "object", "properties": {
            "model": {"type": "string", "enum": ["search-1", "search-2", "search-3"]}},
            "required": ["model"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "answer", "description": "answer",
        "parameters": {"type": "object", "properties": {
            "model": {"type": "string", "enum": ["answer-1", "answer-math-1"]}},
            "required": ["model"], "additionalProperties": False}}},
]
SCHEMAS = ToolSchemas(TOOLS)


def call(name, args):
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


def test_valid_turn_with_thinking_and_two_calls():
    text = ("<think>\nI need docs.\n</think>\n\nLet me look.\n" + call("search", {"model": "search-2"})
            + "\n" + call("answer", {"model": "answer-1"}) + "<|im_end|>")
    t = parse_tool_calls(text, TOOLS)
    assert t.format_ok and t.errors == []
    assert t.thinking == "I need docs."
    assert t.content == "Let me look."
    assert t.calls == [{"name": "search", "arguments": {"model": "search-2"}},
                       {"name": "answer", "arguments": {"model": "answer-1"}}]
    assert t.error_observation() == ""


def test_thinking_close_only_counts_as_thinking():
    t = parse_tool_calls("plan\n</think>\n\n" + call("search", {"model": "search-1"}), SCHEMAS)
    assert t.format_ok and t.thinking == "plan"


@pytest.mark.parametrize("text,needle", [
    ("no calls at all", "no tool call found"),
    ("<tool_call>\n{\"name\": \"search\", \"arguments\": {\"model\": \"search-1\"}}", "unclosed <tool_call>"),
    ("<tool_call><tool_call>{}</tool_call>", "nested <tool_call>"),
    ("</tool_call>", "without a matching <tool_call>"),
    ("<tool_call>{\"name\": \"search\", \"arguments\": {\"model\": \"search-1\"}} extra</tool_call>",
     "unexpected text after the JSON object"),
    ("<tool_call>{\"name\": \"search\", </tool_call>", "invalid JSON"),
    ("<tool_call></tool_call>", "empty <tool_call>"),
    ("<tool_call>[1, 2]</tool_call>", "must be a JSON object, got list"),
    ("<tool_call>{\"name\": \"search\"}</tool_call>", "missing ['arguments']"),
    ("<tool_call>{\"name\": \"search\", \"arguments\": {}, \"id\": 1}</tool_call>", "unexpected ['id']"),
    ("<tool_call>{\"name\": 3, \"arguments\": {}}</tool_call>", '"name" must be a string'),
    ("<tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call>", "unknown tool 'rm'"),
    ("<tool_call>{\"name\": \"search\", \"arguments\": \"x\"}</tool_call>", "must be a JSON object, got str"),
    ("<tool_call>{\"name\": \"search\", \"arguments\": {\"model\": \"gpt-5\"}}</tool_call>",
     "'gpt-5' is not allowed; choose one of ['search-1', 'search-2', 'search-3']"),
    ("<tool_call>{\"name\": \"search\", \"arguments\": {}}</tool_call>", "'model' is a required property"),
    ("<tool_call>{\"name\": \"search\", \"arguments\": {\"model\": \"search-1\", \"q\": 1}}</tool_call>",
     "Additional properties"),
    ("<think>never closed " + call("search", {"model": "search-1"}), "unclosed <think>"),
    ("<tool_call>" + "[" * 50_000 + "</tool_call>", "tool call 1"),
    ("<tool_call>```json\n{}\n```</tool_call>", "code fence"),
])
def test_malformed_turns_give_clear_errors(text, needle):
    t = parse_tool_calls(text, TOOLS)
    assert not t.format_ok
    assert any(needle in e for e in t.errors), t.errors
    obs = t.error_observation()
    assert obs.startswith("Format error in your last turn:") and needle in obs


def test_repeated_tool_flagged_and_deduplicated():
    text = call("search", {"model": "search-1"}) + call("search", {"model": "search-2"})
    t = parse_tool_calls(text, TOOLS)
    assert t.repeated_tools == ["search"]
    assert t.calls == [{"name": "search", "arguments": {"model": "search-1"}}]
    assert not t.format_ok and "more than once" in t.error_observation()


def test_tau2_message_mode():
    t = parse_tool_calls("<think>x</think><message>Hello, how can I help?</message>", TOOLS,
                         allow_message=True)
    assert t.format_ok and t.message == "Hello, how can I help?" and t.calls == []
    t = parse_tool_calls("<message>unclosed", TOOLS, allow_message=True)
    assert not t.format_ok and any("unclosed <message>" in e for e in t.errors)


def test_registry_like_object_is_used():
    class Reg:
        def names(self):
            return ["f"]

        def validate(self, name, arguments):
            return [] if arguments.get("x") == 1 else ["f: x must be 1"]

    assert parse_tool_calls('<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>', Reg()).format_ok
    t = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"x": 2}}</tool_call>', Reg())
    assert not t.format_ok and "x must be 1" in t.errors[0]


def test_odd_inputs_never_raise():
    for text in [None, 12, b"\xff\xfe<tool_call>", "\ud800<tool_call>{\"name\": \"\ud800\"}</tool_call>",
                 "x" * 300_000, "<tool_call>" * 1000, "</think>" * 3 + "<think>"]:
        t = parse_tool_calls(text, TOOLS)
        assert isinstance(t, ParsedTurn) and not t.format_ok and t.errors
    t = parse_tool_calls("x", [{"bad": 1}])
    assert not t.format_ok and "tool schemas unusable" in t.errors[0]


# ---- 10,000 structured-garbage strings -----------------------------------------------------
_PIECES = st.sampled_from([
    "<tool_call>", "</tool_call>", "<think>", "</think>", "<message>", "</message>", "<|im_end|>",
    "{", "}", "[", "]", '"', ":", ",", "\n", " ", "\\", '"name"', '"arguments"', '"search"',
    '"answer"', '"model"', '"search-1"', '"answer-9"', "null", "true", "1e999", "-0", "NaN",
    '{"name": "search", "arguments": {"model": "search-1"}}',
    '{"name": "answer", "arguments": {"model": "answer-1"}}',
    '{"name": "search", "arguments": {"model": "search-1"}} trailing',
    '{"name": "search"}', '{"arguments": {}}', "\ud800", "\x00", "😀", "中文", "```",
])
_GARBAGE = st.one_of(
    st.lists(st.one_of(_PIECES, st.text(max_size=8)), max_size=30).map("".join),
    st.text(max_size=200),
)


@settings(max_examples=10_000, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(_GARBAGE)
def test_10k_malformed_strings_never_raise(text):
    t = parse_tool_calls(text, SCHEMAS)
    assert isinstance(t, ParsedTurn)
    if t.format_ok:
        assert t.calls and not t.errors
        for c in t.calls:
            assert set(c) == {"name", "arguments"} and not SCHEMAS.validate(c["name"], c["arguments"])
    else:
        assert t.errors and t.error_observation().startswith("Format error")
        assert all(isinstance(e, str) and e for e in t.errors)
