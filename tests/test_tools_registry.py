"""Registry validation messages, rendering vs the release's official tool schema, execution."""

import asyncio
import json

import pytest

from orchestra_jax.tools.aliases import ModelDescriptions, ModelMapping
from orchestra_jax.tools.meta_tools import call_expert_tool, meta_tool
from orchestra_jax.tools.pricing import PriceSheet
from orchestra_jax.tools.registry import Tool, ToolRegistry, ToolResult

OFFICIAL = "toolscale_envs/orchestrator_tools.official.json"


def _flight_tool(executor=None):
    return Tool(
        name="get_flight_status",
        description="Status of a flight on a date.",
        parameters={"type": "object",
                    "properties": {"flight_number": {"type": "string"},
                                   "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
                                   "cabin": {"type": "string",
                                             "enum": ["economy", "business"]}},
                    "required": ["flight_number", "date"], "additionalProperties": False},
        executor=executor)


def test_validation_messages_are_specific():
    reg = ToolRegistry([_flight_tool()])
    assert reg.validate("get_flight_status", {"flight_number": "HAT1", "date": "2024-05-01"}) == []
    errs = reg.validate("get_flight_status", {"flight_number": "HAT1", "date": "2024-05-01",
                                              "cabin": "first"})
    assert errs == ["get_flight_status: argument 'cabin' = 'first' is not allowed; choose one of "
                    "['economy', 'business']"]
    errs = reg.validate("get_flight_status", {"date": "May 1"})
    assert any("missing required argument(s) ['flight_number']" in e for e in errs)
    assert any("argument 'date'" in e and "does not match" in e for e in errs)
    errs = reg.validate("get_flight_status", {"flight_number": 7, "date": "2024-05-01", "x": 1})
    assert any("argument 'flight_number': 7 is not of type 'string'" in e for e in errs)
    assert any("'x' was unexpected" in e and "allowed arguments" in e for e in errs)
    assert reg.validate("get_flight_status", ["not", "a", "dict"]) == [
        "get_flight_status: arguments must be a JSON object, got list"]
    assert "unknown tool 'nope'" in reg.validate("nope", {})[0]
    assert "exactly the keys" in reg.validate_call({"name": "get_flight_status"})[0]


def test_bad_tool_definitions_rejected():
    with pytest.raises(ValueError, match="category"):
        Tool("t", "d", {"type": "object"}, category="magic")
    with pytest.raises(ValueError, match="invalid JSON schema"):
        Tool("t", "d", {"type": "object", "properties": {"a": {"type": 5}}})
    with pytest.raises(ValueError, match="already registered"):
        ToolRegistry([_flight_tool(), _flight_tool()])


def test_execute_never_raises():
    async def ok(args):
        return ToolResult(observation=f"{args['flight_number']} on time")

    async def boom(args):
        raise RuntimeError("db down")

    reg = ToolRegistry([_flight_tool(ok)])
    r = asyncio.run(reg.execute({"name": "get_flight_status",
                                 "arguments": {"flight_number": "HAT1", "date": "2024-05-01"}}))
    assert r.ok and r.observation == "HAT1 on time" and r.latency_s > 0
    r = asyncio.run(reg.execute({"name": "get_flight_status", "arguments": {"date": "x"}}))
    assert not r.ok and r.observation.startswith("Error:") and "flight_number" in r.error
    reg2 = ToolRegistry([_flight_tool(boom)])
    r = asyncio.run(reg2.execute({"name": "get_flight_status",
                                  "arguments": {"flight_number": "A", "date": "2024-01-01"}}))
    assert not r.ok and "RuntimeError: db down" in r.error
    assert ToolResult.from_json(json.loads(json.dumps(r.to_json()))) == r


def test_rendering_matches_official_schema(shared_data):
    official = json.loads((shared_data / OFFICIAL).read_text())
    mapping, prices, desc = ModelMapping.paper_eval(), PriceSheet.load("paper_eval"), \
        ModelDescriptions.load()
    reg = ToolRegistry(meta_tool(n, mapping, prices, desc)
                       for n in ("enhance_reasoning", "answer", "search"))
    ours = reg.to_openai_tools(include_enum=False)
    # The release's answer table has a stray "$$0.2"; everything else is identical.
    fixed = json.loads(json.dumps(official).replace("$$0.2", "$0.2"))
    assert ours == fixed
    # With enums (default) the shape is the same plus "enum" on the alias argument.
    with_enum = reg.to_openai_tools()
    prop = with_enum[1]["function"]["parameters"]["properties"]["model"]
    assert prop["enum"] == ["answer-1", "answer-2", "answer-3", "answer-4", "answer-math-1",
                            "answer-math-2"]
    assert reg.validate("answer", {"model": "answer-9"})[0].startswith(
        "answer: argument 'model' = 'answer-9' is not allowed; choose one of ['answer-1'")
    ce = call_expert_tool(mapping, prices).to_openai()["function"]
    assert ce["name"] == "call_expert"
    assert ce["parameters"]["properties"]["expert"]["enum"] == ["expert-1", "expert-2", "expert-3"]
    assert "expert-1 | $1.25 | $10 | 96s" in ce["parameters"]["properties"]["expert"]["description"]
