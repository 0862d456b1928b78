"""Bounded, deadline-limited JSON POSTs with retries (shared by the expert client and web search).

Guarantees (the release retried forever with 60 s sleeps):
* the whole call — every attempt, connect, read and back-off sleep — ends within ``timeout_s``
  seconds (plus scheduling slack), enforced with ``asyncio.wait_for`` per attempt;
* at most ``1 + max_retries`` HTTP requests;
* retries only on 429, 5xx, connection errors and attempt timeouts (a malformed URL or any other
  transport exception fails at once); exponential back-off
  ``backoff_base_s * 2**attempt`` (capped at ``max_backoff_s``), or the server's ``Retry-After``
  when larger, capped at ``retry_after_cap_s``;
* secrets (API keys) never appear in raised errors or logs: every message goes through
  :func:`redact`, and errors are raised ``from None`` so httpx exceptions (which hold the request)
  are not chained.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import logging
import time
from typing import Any, Optional, Sequence

import httpx

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class HTTPCallError(RuntimeError):
    """A POST failed for good. ``status`` is the last HTTP status (None for network errors)."""

    def __init__(self, message: str, *, status: Optional[int] = None, attempts: int = 0,
                 retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.attempts = attempts
        self.retryable = retryable


def redact(text: str, secrets: Sequence[Optional[str]]) -> str:
    """``text`` with every non-trivial secret replaced by ``***``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if dt is None:
        return None
    return max(0.0, dt.timestamp() - time.time())


def check_base_url(url: str, what: str = "base_url") -> str:
    """``url`` if it is an absolute http(s) URL with a host and a valid port, else ValueError
    (a typo in a config must be a clear error, not three retried connection failures)."""
    try:
        u = httpx.URL(url) if isinstance(url, str) else None
    except (httpx.InvalidURL, ValueError, TypeError):
        u = None
    if u is None or u.scheme not in ("http", "https") or not u.host or \
            not 0 < (u.port or 1) < 65536:
        raise ValueError(f"{what} must be an absolute http(s) URL with a host (e.g. "
                         f"http://127.0.0.1:30000/v1), got {url!r}")
    return url


@dataclasses.dataclass
class RetryPolicy:
    """Timeout and retry knobs (seconds)."""

    timeout_s: float = 300.0
    max_retries: int = 2
    backoff_base_s: float = 0.5
    max_backoff_s: float = 8.0
    retry_after_cap_s: float = 30.0

    def __post_init__(self):
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")


async def post_json(client: httpx.AsyncClient, url: str, payload: Any, *,
                    headers: Optional[dict] = None, policy: RetryPolicy,
                    secrets: Sequence[Optional[str]] = (), what: str = "request"
                    ) -> tuple[dict, int]:
    """POSTs ``payload`` as JSON; returns (parsed JSON body, attempts used).

    Raises :class:`HTTPCallError` (redacted message) when the call cannot succeed.
    """
    deadline = time.monotonic() + policy.timeout_s
    attempts = 0
    last_err = "no attempt made"
    last_status: Optional[int] = None
    safe_url = redact(url, secrets)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HTTPCallError(f"{what} to {safe_url} timed out after {policy.timeout_s:g}s "
                                f"({attempts} attempt(s); last error: {last_err})",
                                status=last_status, attempts=attempts, retryable=True)
        attempts += 1
        retry_after: Optional[float] = None
        try:
            resp = await asyncio.wait_for(client.post(url, json=payload, headers=headers),
                                          timeout=remaining)
        except asyncio.TimeoutError:
            last_err, last_status, retryable = f"no response within {remaining:.1f}s", None, True
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:   # a bad URL: no retry
            raise HTTPCallError(f"{what} to {safe_url} failed: "
                                f"{redact(f'{type(e).__name__}: {e}', secrets)}",
                                attempts=attempts) from None
        except httpx.HTTPError as e:
            last_err = redact(f"{type(e).__name__}: {e}", secrets)
            last_status, retryable = None, True
        except Exception as e:  # noqa: BLE001 - anything else from the transport: not retried
            raise HTTPCallError(f"{what} to {safe_url} failed: "
                                f"{redact(f'{type(e).__name__}: {e}', secrets)}",
                                attempts=attempts) from None
        else:
            last_status = resp.status_code
            if resp.status_code == 200:
                try:
                    return resp.json(), attempts
                except ValueError:
                    raise HTTPCallError(
                        f"{what} to {safe_url}: HTTP 200 but the body is not JSON: "
                        f"{redact(resp.text[:300], secrets)!r}",
                        status=200, attempts=attempts) from None
            body = redact(resp.text[:300], secrets)
            last_err = f"HTTP {resp.status_code}: {body!r}"
            retryable = resp.status_code in RETRY_STATUS or resp.status_code >= 500
            retry_after = parse_retry_after(resp.headers.get("retry-after"))
        if not retryable:
            raise HTTPCallError(f"{what} to {safe_url} failed: {last_err}", status=last_status,
                                attempts=attempts)
        if attempts > policy.max_retries:
            raise HTTPCallError(f"{what} to {safe_url} failed after {attempts} attempt(s) "
                                f"(max_retries={policy.max_retries}): {last_err}",
                                status=last_status, attempts=attempts, retryable=True)
        wait = min(policy.backoff_base_s * 2 ** (attempts - 1), policy.max_backoff_s)
        if retry_after is not None:
            wait = max(wait, min(retry_after, policy.retry_after_cap_s))
        remaining = deadline - time.monotonic()
        if wait >= remaining:
            raise HTTPCallError(f"{what} to {safe_url} failed: {last_err}; the next retry "
                                f"(in {wait:.1f}s) would pass the {policy.timeout_s:g}s timeout",
                                status=last_status, attempts=attempts, retryable=True)
        log.warning("%s to %s: %s; retry %d/%d in %.2fs", what, safe_url, last_err, attempts,
                    policy.max_retries, wait)
        await asyncio.sleep(wait)
