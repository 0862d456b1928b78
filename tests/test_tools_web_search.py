"""Tavily client: missing key, parsing of a Tavily-format response served by a local server,
cost = $0.01 + $0.002 per document, bounded failures."""

import asyncio
import time

import pytest

from orchestra_jax.tools.pricing import PriceSheet
from orchestra_jax.tools.web_search import (MissingAPIKey, TavilyClient, WebSearchError,
                                            parse_tavily_response)
from tools_fault_server import FaultServer

KEY = "tvly-SECRET-abcdef123456"
TAVILY_BODY = {
    "query": "who discovered penicillin",
    "follow_up_questions": None,
    "answer": None,
    "images": [],
    "results": [
        {"title": "Penicillin - Wikipedia", "url": "https://en.wikipedia.org/wiki/Penicillin",
         "content": "Penicillin was discovered in 1928 by Alexander Fleming.", "score": 0.98,
         "raw_content": None},
        {"title": "Alexander Fleming", "url": "https://example.org/fleming",
         "content": "Scottish physician and microbiologist.", "score": 0.87, "raw_content": None},
        {"title": "History of antibiotics", "url": "https://example.org/antibiotics",
         "content": "Antibiotics revolutionised medicine.", "score": 0.5, "raw_content": None},
    ],
    "response_time": 1.23,
}


def test_missing_key_is_clear(monkeypatch):
    monkeypatch.delenv("TAVILY_API_KEY", raising=False)
    with pytest.raises(MissingAPIKey, match="TAVILY_API_KEY"):
        TavilyClient()


def test_search_parses_tavily_response_and_costs(monkeypatch):
    monkeypatch.setenv("TAVILY_API_KEY", KEY)

    async def go(url):
        c = TavilyClient(base_url=url, max_results=3, prices=PriceSheet.load("paper_eval"))
        try:
            return await c.search("who discovered penicillin")
        finally:
            await c.aclose()

    with FaultServer([("json", 200, TAVILY_BODY, {})]) as srv:
        res = asyncio.run(go(srv.url))
        path, headers, body = srv.requests[0]
    assert path == "/search"
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert body["query"] == "who discovered penicillin" and body["max_results"] == 3
    assert [d.title for d in res.documents] == ["Penicillin - Wikipedia", "Alexander Fleming",
                                                "History of antibiotics"]
    d0 = res.documents[0]
    assert d0.url == d0.id == "https://en.wikipedia.org/wiki/Penicillin"
    assert "1928" in d0.text and d0.score == pytest.approx(0.98)
    assert res.cost_usd == pytest.approx(0.01 + 3 * 0.002)


def test_search_failure_bounded_and_redacted(monkeypatch):
    async def go(url):
        c = TavilyClient(api_key=KEY, base_url=url, timeout_s=1.0, max_retries=1)
        try:
            return await c.search("q")
        finally:
            await c.aclose()

    with FaultServer([("json", 503, {"detail": f"down {KEY}"}, {})]) as srv:
        t0 = time.monotonic()
        with pytest.raises(WebSearchError) as ei:
            asyncio.run(go(srv.url))
        assert time.monotonic() - t0 < 2.0
        assert srv.hits == 2
    assert KEY not in str(ei.value) and "HTTP 503" in str(ei.value)


def test_malformed_response():
    with pytest.raises(WebSearchError, match="results"):
        parse_tavily_response({"nope": 1})
    with pytest.raises(WebSearchError, match="result 0 has score 'high'"):
        parse_tavily_response({"results": [{"url": "u", "content": "c", "score": "high"}]})
    docs = parse_tavily_response({"results": ["junk", {"url": 7, "content": "c", "score": "0.5"}]})
    assert [(d.id, d.url, d.score) for d in docs] == [("7", "7", 0.5)]
