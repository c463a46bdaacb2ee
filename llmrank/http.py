"""One HTTP retry policy for every client llmrank has (the OpenAI-compatible backend, the /rerank client).

Both send through :func:`send` on an ``httpx.Client``: timeouts, dropped connections and the statuses a
busy or restarting server answers with (:data:`RETRY_STATUS`) are retried with exponential backoff and
jitter, honouring ``Retry-After``; anything else comes back at once. A request that never got an answer
is an :class:`LlmrankError` naming the URL and what happened (a refused connection says so, with the
caller's hint); a response with an error status is returned for the caller to explain.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from dataclasses import dataclass

from llmrank.errors import LlmrankError

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
"""Statuses worth another try: timeout, conflict, rate limit, and the 5xx a loaded or restarting server gives."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a request is tried again."""

    max_retries: int = 5
    """Tries after the first one."""
    backoff: float = 0.5
    """Seconds before the first retry; doubled for each further one, plus up to 25 % jitter."""
    max_delay: float = 30.0
    """No wait is longer than this (a ``Retry-After`` asking for more is capped too)."""
    retry_refused: bool = True
    """Retry a refused connection (a server restarting); False fails at once (nothing listens there)."""
    retry_status: frozenset = RETRY_STATUS

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``attempt + 1``."""
        wait = self.backoff * (2 ** attempt) * (1 + 0.25 * random.random())
        if retry_after:
            try:
                wait = max(wait, float(retry_after))
            except ValueError:
                pass
        return min(wait, self.max_delay)


def _reason(e: Exception) -> str:
    text = str(e) or type(e).__name__
    return "connection refused" if "refused" in text.lower() else text


def send(client, method: str, url, policy: RetryPolicy, json: dict | None = None, stats: Counter | None = None,
         refused_hint: str = "", sleep=time.sleep):
    """``client.request(method, url, json=json)`` under ``policy``; returns the last ``httpx.Response``
    (a success, or an error status that is not retried or ran out of retries). ``stats['retries']`` counts
    the retries. A request with no answer at all is an :class:`LlmrankError`. ``url`` may be a function of
    the attempt number (a pool of servers: each retry goes to the next one)."""
    import httpx

    url_at = url if callable(url) else (lambda attempt: url)
    for attempt in range(policy.max_retries + 1):
        last = attempt == policy.max_retries
        url = url_at(attempt)
        try:
            r = client.request(method, url, json=json)
        except httpx.ConnectError as e:
            if last or not policy.retry_refused:
                root = url.split("/", 3)
                where = "/".join(root[:3]) if len(root) >= 3 else url
                raise LlmrankError(f"cannot reach a server at {where} ({_reason(e)})" + (f": {refused_hint}" if refused_hint else "")
                                   + (f" (after {attempt + 1} tries)" if attempt else "")) from None
            wait = policy.delay(attempt)
        except httpx.TimeoutException:
            if last:
                raise LlmrankError(f"{url}: no answer within {client.timeout.read} s, {attempt + 1} tries") from None
            wait = policy.delay(attempt)
        except httpx.TransportError as e:
            if last:
                raise LlmrankError(f"{url}: no answer after {attempt + 1} tries ({type(e).__name__}: {_reason(e)})") from None
            wait = policy.delay(attempt)
        else:
            if r.status_code not in policy.retry_status or last:
                return r
            wait = policy.delay(attempt, r.headers.get("retry-after"))
        if stats is not None:
            stats["retries"] += 1
        log.info("%s %s: retry %d in %.1f s", method, url, attempt + 1, wait)
        sleep(wait)
    raise AssertionError("unreachable")
