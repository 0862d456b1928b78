"""Web search through the Tavily REST API (``POST https://api.tavily.com/search``).

Auth is ``Authorization: Bearer <TAVILY_API_KEY>`` (key from the environment, never logged). Results
come back as :class:`~orchestra_jax.tools.retrieval.Document` (``text`` = Tavily's ``content``, or
``raw_content`` when requested). Cost follows the paper's sheet: $0.01 per search + $0.002 per
returned document (``PriceSheet.cost_of_search``). Calls are bounded: ``timeout_s`` total,
``max_retries`` retries on 429/5xx/connection errors (see :mod:`orchestra_jax.tools.http_retry`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Optional

import httpx

from orchestra_jax.tools.http_retry import (HTTPCallError, RetryPolicy, check_base_url, post_json,
                                            redact)
from orchestra_jax.tools.pricing import PriceSheet
from orchestra_jax.tools.retrieval import Document

TAVILY_URL = "https://api.tavily.com"


class MissingAPIKey(RuntimeError):
    """No API key in the environment."""


class WebSearchError(RuntimeError):
    """A web search failed (timeout, HTTP error, malformed response); never holds the key."""


@dataclasses.dataclass
class WebSearchResult:
    """Documents of one search, what it cost (US dollars) and took (seconds)."""

    query: str
    documents: list[Document]
    cost_usd: float
    latency_s: float
    answer: Optional[str] = None


def parse_tavily_response(body: Any, *, use_raw_content: bool = False) -> list[Document]:
    """Tavily ``/search`` JSON -> documents, best first. Raises WebSearchError if malformed."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise WebSearchError(f"malformed Tavily response (no 'results' list): {str(body)[:300]}")
    docs = []
    for i, r in enumerate(body["results"]):
        if not isinstance(r, dict):
            continue
        text = (r.get("raw_content") if use_raw_content else None) or r.get("content") or ""
        url = r.get("url") or None
        url = str(url) if url is not None else None
        try:
            score = float(r.get("score") or 0.0)
        except (TypeError, ValueError):
            raise WebSearchError(f"malformed Tavily response: result {i} has score "
                                 f"{r.get('score')!r:.80}") from None
        docs.append(Document(id=str(url or f"web-{i}"), title=str(r.get("title") or ""),
                             text=str(text), score=score, url=url))
    return docs


class TavilyClient:
    """Async Tavily search client."""

    def __init__(self, api_key: Optional[str] = None, *, api_key_env: str = "TAVILY_API_KEY",
                 base_url: str = TAVILY_URL, search_depth: str = "basic", max_results: int = 5,
                 include_raw_content: bool = False, timeout_s: float = 30.0,
                 max_retries: int = 2, prices: Optional[PriceSheet] = None,
                 client: Optional[httpx.AsyncClient] = None):
        key = api_key or os.environ.get(api_key_env)
        if not key:
            raise MissingAPIKey(f"web search needs a Tavily API key: set the environment variable "
                                f"{api_key_env} (or pass api_key=...)")
        if search_depth not in ("basic", "advanced"):
            raise ValueError(f"search_depth must be 'basic' or 'advanced', got {search_depth!r}")
        self._key = key
        self.base_url = check_base_url(base_url, "Tavily base_url").rstrip("/")
        self.search_depth = search_depth
        self.max_results = max_results
        self.include_raw_content = include_raw_content
        self.prices = prices
        self.policy = RetryPolicy(timeout_s=timeout_s, max_retries=max_retries)
        self._client = client
        self._own_client = client is None

    def __repr__(self) -> str:
        return f"TavilyClient(base_url={self.base_url!r})"

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None

    async def search(self, query: str, max_results: Optional[int] = None) -> WebSearchResult:
        """Searches the web; raises :class:`WebSearchError` on failure."""
        if not isinstance(query, str) or not query.strip():
            raise WebSearchError("web search needs a non-empty query")
        n = int(max_results or self.max_results)
        payload = {"query": query, "search_depth": self.search_depth, "max_results": n,
                   "include_answer": False, "include_raw_content": self.include_raw_content}
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.policy.timeout_s),
                                             trust_env=False)
        t0 = time.perf_counter()
        try:
            body, _ = await post_json(self._client, self.base_url + "/search", payload,
                                      headers={"Authorization": f"Bearer {self._key}"},
                                      policy=self.policy, secrets=[self._key], what="web search")
        except HTTPCallError as e:
            raise WebSearchError(redact(str(e), [self._key])) from None
        docs = parse_tavily_response(body, use_raw_content=self.include_raw_content)[:n]
        prices = self.prices or PriceSheet(name="tavily-default", models={})
        return WebSearchResult(query=query, documents=docs,
                               cost_usd=prices.cost_of_search(len(docs)),
                               latency_s=time.perf_counter() - t0,
                               answer=body.get("answer") if isinstance(body, dict) else None)
