"""Expert client against a real local HTTP fault server: bounded time, bounded retries,
Retry-After, secrets never leaked, JSON parsing of well-formed completions."""

import asyncio
import logging
import time

import pytest

from orchestra_jax.tools.http_retry import parse_retry_after
from orchestra_jax.tools.llm_client import (ChatModel, ExpertConfig, ExpertError,
                                            OpenAIChatClient, build_expert_clients,
                                            parse_chat_completion)
from orchestra_jax.tools.pricing import PriceSheet
from tools_fault_server import FaultServer, chat_completion

SECRET = "sk-test-SECRET-0123456789abcdef"
MSGS = [{"role": "user", "content": "hi"}]


def _client(url, monkeypatch, **kw):
    monkeypatch.setenv("EXPERT_KEY_FOR_TEST", SECRET)
    cfg = dict(base_url=url + "/v1", model="gpt-5", api_key_env="EXPERT_KEY_FOR_TEST",
               timeout_s=5.0, max_retries=2, backoff_base_s=0.05, max_backoff_s=0.2)
    cfg.update(kw)
    return OpenAIChatClient(ExpertConfig(**cfg), prices=PriceSheet.load("paper_eval"))


def _run(coro):
    return asyncio.run(coro)


async def _chat_and_close(client, **kw):
    try:
        return await client.chat(MSGS, max_tokens=16, temperature=0.0, **kw)
    finally:
        await client.aclose()


def test_well_formed_completion_parsed_and_priced(monkeypatch):
    tool_calls = [{"id": "c1", "type": "function",
                   "function": {"name": "search", "arguments": '{"model": "search-1"}'}},
                  {"id": "c2", "type": "function",
                   "function": {"name": "answer", "arguments": "{not json"}}]
    with FaultServer([("json", 200, chat_completion("hello", 1000, 200, tool_calls=tool_calls),
                       {})]) as srv:
        client = _client(srv.url, monkeypatch)
        assert isinstance(client, ChatModel)
        resp = _run(_chat_and_close(client))
    assert resp.text == "hello"
    assert resp.prompt_tokens == 1000 and resp.completion_tokens == 200
    # gpt-5: $1.25 / 1M input, $10 / 1M output
    assert resp.cost_usd == pytest.approx(1000 * 1.25 / 1e6 + 200 * 10 / 1e6)
    assert resp.tool_calls[0] == {"name": "search", "arguments": {"model": "search-1"}}
    assert resp.tool_calls[1]["name"] == "answer" and resp.tool_calls[1]["arguments"] == {}
    assert "not valid JSON" in resp.tool_calls[1]["parse_error"]
    path, headers, body = srv.requests[0]
    assert path == "/v1/chat/completions"
    assert body["model"] == "gpt-5" and body["messages"] == MSGS
    # OpenAI's reasoning models take the budget as max_completion_tokens (max_tokens is refused)
    assert body["max_completion_tokens"] == 16 and "max_tokens" not in body
    assert headers.get("Authorization") == f"Bearer {SECRET}"


def test_token_limit_field_per_model(monkeypatch):
    from orchestra_jax.tools.llm_client import token_limit_param
    auto = {m: token_limit_param(ExpertConfig(base_url="http://x/v1", model=m))
            for m in ("gpt-5-mini", "o3-mini", "o4-mini", "Qwen/Qwen3-32B", "gpt-4o", "oss-model")}
    assert auto == {"gpt-5-mini": "max_completion_tokens", "o3-mini": "max_completion_tokens",
                    "o4-mini": "max_completion_tokens", "Qwen/Qwen3-32B": "max_tokens",
                    "gpt-4o": "max_tokens", "oss-model": "max_tokens"}
    with pytest.raises(ValueError, match="token_limit_param"):
        ExpertConfig(base_url="http://x/v1", model="m", token_limit_param="max_new_tokens")
    with FaultServer([("chat", "ok", 3, 1)]) as srv:
        _run(_chat_and_close(_client(srv.url, monkeypatch, model="Qwen/Qwen3-32B")))
        _run(_chat_and_close(_client(srv.url, monkeypatch, model="Qwen/Qwen3-32B",
                                     token_limit_param="max_completion_tokens")))
    (_, _, plain), (_, _, forced) = srv.requests
    assert plain["max_tokens"] == 16 and "max_completion_tokens" not in plain
    assert forced["max_completion_tokens"] == 16 and "max_tokens" not in forced


def test_500_retries_are_bounded_and_key_redacted(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    # The server echoes the key back in its error body: it must still never surface.
    with FaultServer([("json", 500, {"error": f"boom, your key {SECRET} is bad"}, {})]) as srv:
        client = _client(srv.url, monkeypatch, max_retries=2)
        t0 = time.monotonic()
        with pytest.raises(ExpertError) as ei:
            _run(_chat_and_close(client))
        elapsed = time.monotonic() - t0
        assert srv.hits == 3  # 1 + max_retries, never more
    err = ei.value
    assert "HTTP 500" in str(err) and "3 attempt" in str(err)
    assert err.status == 500 and err.attempts == 3
    assert elapsed < 5.0
    for text in (str(err), repr(err), repr(client), caplog.text):
        assert SECRET not in text
    assert err.__cause__ is None and err.__suppress_context__


def test_429_honours_retry_after_then_succeeds(monkeypatch):
    with FaultServer([("json", 429, {"error": "slow down"}, {"Retry-After": "1"}),
                      ("chat", "ok", 3, 2)]) as srv:
        client = _client(srv.url, monkeypatch, max_retries=2)
        t0 = time.monotonic()
        resp = _run(_chat_and_close(client))
        elapsed = time.monotonic() - t0
        assert srv.hits == 2
    assert resp.text == "ok" and resp.attempts == 2
    assert elapsed >= 0.95  # waited Retry-After (1 s), not the 0.05 s back-off


def test_retry_after_is_capped(monkeypatch):
    with FaultServer([("json", 429, {}, {"Retry-After": "3600"}), ("chat", "ok", 1, 1)]) as srv:
        client = _client(srv.url, monkeypatch, retry_after_cap_s=0.3)
        t0 = time.monotonic()
        resp = _run(_chat_and_close(client))
        assert time.monotonic() - t0 < 2.0
        assert resp.text == "ok" and srv.hits == 2


def test_hanging_server_ends_within_timeout(monkeypatch):
    with FaultServer([("hang",)]) as srv:
        client = _client(srv.url, monkeypatch, timeout_s=1.0, max_retries=5)
        t0 = time.monotonic()
        with pytest.raises(ExpertError) as ei:
            _run(_chat_and_close(client))
        elapsed = time.monotonic() - t0
    assert elapsed < 1.5, elapsed
    assert "timed out" in str(ei.value) or "timeout" in str(ei.value)
    assert SECRET not in str(ei.value)


def test_4xx_is_not_retried(monkeypatch):
    with FaultServer([("json", 400, {"error": "bad request: max_tokens too large"}, {})]) as srv:
        client = _client(srv.url, monkeypatch)
        with pytest.raises(ExpertError, match="HTTP 400.*max_tokens too large"):
            _run(_chat_and_close(client))
        assert srv.hits == 1


def test_connection_refused_bounded(monkeypatch):
    with FaultServer([("chat", "x", 1, 1)]) as srv:
        url = srv.url
    # server closed: connections are refused
    client = _client(url, monkeypatch, max_retries=1)
    t0 = time.monotonic()
    with pytest.raises(ExpertError, match="2 attempt"):
        _run(_chat_and_close(client))
    assert time.monotonic() - t0 < 3.0


def test_malformed_body_is_a_clear_error(monkeypatch):
    with FaultServer([("json", 200, {"unexpected": True}, {})]) as srv:
        client = _client(srv.url, monkeypatch)
        with pytest.raises(ExpertError, match="malformed chat completion"):
            _run(_chat_and_close(client))


def test_missing_key_env_is_clear(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ExpertError, match="NO_SUCH_KEY_VAR"):
        OpenAIChatClient(ExpertConfig(base_url="http://127.0.0.1:9/v1", model="m",
                                      api_key_env="NO_SUCH_KEY_VAR"))


def test_parse_helpers():
    r = parse_chat_completion({"choices": [{"message": {"content": None,
                                                         "reasoning_content": "hmm"}}]}, "m")
    assert r.text == "" and r.reasoning == "hmm" and r.prompt_tokens == 0
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("garbage") is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") < 1e-9 + 0.0 + 1  # past → 0
    clients = build_expert_clients({"Qwen/Qwen3-32B": {"base_url": "http://h/v1"}})
    assert clients["Qwen/Qwen3-32B"].config.model == "Qwen/Qwen3-32B"


@pytest.mark.parametrize("body,needle", [
    ({"choices": [["x"]]}, "choices[0] is not an object"),
    ({"choices": [{"message": "text"}]}, "message is not an object"),
    ({"choices": [{"message": {"content": "a"}}], "usage": "bad"}, "usage is not an object"),
    ({"choices": [{"message": {"content": "a"}}], "usage": {"prompt_tokens": "abc"}},
     "usage.prompt_tokens = 'abc'"),
    ({"choices": [{"message": {"content": "a"}}], "usage": {"completion_tokens": -5}},
     "usage.completion_tokens = -5"),
    ([1, 2], "no choices[0]"),
])
def test_malformed_completion_shapes_raise_expert_error(body, needle):
    """A server answering JSON of the wrong shape is an ExpertError, never AttributeError etc."""
    with pytest.raises(ExpertError) as e:
        parse_chat_completion(body, "m")
    assert needle in str(e.value)


def test_malformed_tool_calls_become_parse_errors():
    for raw, needle in (("nope", "tool_calls is a str"), ([1], "tool call is a int"),
                        ([{"function": {"name": "f", "arguments": "[1]"}}], "is a list")):
        r = parse_chat_completion({"choices": [{"message": {"content": "a", "tool_calls": raw}}]})
        assert len(r.tool_calls) == 1 and needle in r.tool_calls[0]["parse_error"], r.tool_calls
    r = parse_chat_completion({"choices": [{"message": {"tool_calls": [
        {"function": {"name": "f", "arguments": '{"x": 1}'}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2.0}})
    assert r.tool_calls == [{"name": "f", "arguments": {"x": 1}}]
    assert (r.prompt_tokens, r.completion_tokens) == (3, 2)


@pytest.mark.parametrize("url", ["", "127.0.0.1:30000/v1", "ftp://host/v1", "http:///v1",
                                 "http://127.0.0.1:99999/v1"])
def test_bad_base_url_is_a_clear_config_error(url):
    """A malformed expert/Tavily URL fails at construction (no retried connection attempts)."""
    from orchestra_jax.tools.web_search import TavilyClient
    with pytest.raises(ExpertError, match="base_url must be an absolute http"):
        OpenAIChatClient(ExpertConfig(base_url=url, model="m"))
    with pytest.raises(ValueError, match="Tavily base_url must be an absolute http"):
        TavilyClient(api_key="tvly-x", base_url=url)


def test_transport_exceptions_are_not_retried():
    """Whatever the transport raises (here: a port httpx only rejects at connect time) becomes
    one HTTPCallError after a single attempt, not a raw exception or retries."""
    import httpx

    from orchestra_jax.tools.http_retry import HTTPCallError, RetryPolicy, post_json

    async def go():
        async with httpx.AsyncClient() as client:
            return await post_json(client, "http://127.0.0.1:99999/v1/x", {},
                                   policy=RetryPolicy(timeout_s=5, max_retries=3),
                                   secrets=["k3y-secret"], what="probe")

    with pytest.raises(HTTPCallError) as e:
        _run(go())
    assert e.value.attempts == 1 and "probe to http://127.0.0.1:99999/v1/x failed" in str(e.value)
