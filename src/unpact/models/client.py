"""An HTTP client for OpenAI-compatible ``/v1/completions`` endpoints (llama.cpp's server, vLLM).

Only what the served scoring backend (`unpact.models.served`) needs: one completion request with
``echo``/``logprobs``, sent many at a time with bounded concurrency, a timeout, and retries with
exponential backoff on connection errors, 429 and 5xx. Anything the caller can fix (a wrong URL, a
rejected key, a server without ``echo``/``logprobs``) becomes one `UnpactError` line naming the URL.

The API key is read from an environment variable at construction and kept only in the request
headers: it is never part of an error message, a repr, a log line or a run directory.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

from ..errors import UnpactError

DEFAULT_KEY_ENV = "UNPACT_API_KEY"
# Status codes worth another try: the server is overloaded or restarting, not refusing the request.
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def is_served(ref) -> bool:
    """Whether a ``--model`` value names a served model (an http(s) URL) rather than a folder or name."""
    return isinstance(ref, str) and ref.startswith(("http://", "https://"))


def public_url(url: str) -> str:
    """``url`` without user:password (what may be shown and stored)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class CompletionsClient:
    """Requests to one ``…/v1`` base URL.

    concurrency: requests in flight at once; timeout: seconds per request; retries: further attempts
    after a retryable failure, waiting ``backoff · 2^k`` seconds (with jitter) before attempt k + 1.
    """

    def __init__(self, url: str, key_env: str = DEFAULT_KEY_ENV, concurrency: int = 4, timeout: float = 120.0,
                 retries: int = 4, backoff: float = 0.5):
        import httpx

        if not is_served(url):
            raise UnpactError(f"{url!r} is not an http(s) URL; give the server's base, e.g. http://127.0.0.1:8080/v1")
        if concurrency < 1 or retries < 0 or not timeout > 0:
            raise UnpactError("served model: concurrency ≥ 1, retries ≥ 0 and timeout > 0 are needed")
        self.url = public_url(url)
        self.concurrency, self.retries, self.backoff = concurrency, retries, backoff
        headers = {}
        key = os.environ.get(key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.key_env = key_env
        self.requests = 0  # sent, retries included: what `unpact audit` reports as load
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout,
                                  limits=httpx.Limits(max_connections=concurrency))
        self._model: str | None = None

    def __repr__(self) -> str:  # no headers: they hold the key
        return f"CompletionsClient({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        import httpx

        for attempt in range(self.retries + 1):
            self.requests += 1
            try:
                r = self._http.request(method, path, json=body)
            except (httpx.TransportError, httpx.TimeoutException) as e:
                failure = f"{type(e).__name__}: {e}"
            else:
                if r.status_code < 400:
                    try:
                        return r.json()
                    except ValueError:
                        raise UnpactError(f"{self.url}{path}: the server answered with something that is not "
                                          f"JSON ({r.text[:80]!r}); is this an OpenAI-compatible endpoint?") from None
                if r.status_code not in RETRY_STATUS:
                    raise self._refused(path, r)
                failure = f"HTTP {r.status_code}"
            if attempt < self.retries:
                time.sleep(self.backoff * 2 ** attempt * (0.5 + random.random()))
        raise UnpactError(f"{self.url}{path}: no answer after {self.retries + 1} attempts ({failure}); check the "
                          "server is running and reachable, or raise --retries/--timeout")

    def _refused(self, path: str, r) -> UnpactError:
        try:
            detail = r.json()
            detail = detail.get("error", detail) if isinstance(detail, dict) else detail
            detail = detail.get("message", detail) if isinstance(detail, dict) else detail
        except ValueError:
            detail = r.text
        detail = " ".join(str(detail).split())[:200]
        if r.status_code in (401, 403):
            return UnpactError(f"{self.url}{path}: the server refused the API key (HTTP {r.status_code}); put a valid "
                               f"key in the environment variable {self.key_env}")
        if r.status_code == 404:
            return UnpactError(f"{self.url}{path}: not found (HTTP 404); give the base URL that serves "
                               "/completions, usually ending in /v1")
        return UnpactError(f"{self.url}{path}: the server refused the request (HTTP {r.status_code}: {detail})")

    def model(self) -> str:
        """The served model's id (``GET /models``), asked once; also proves the server is there."""
        if self._model is None:
            data = self._request("GET", "/models").get("data") or []
            if not data or not isinstance(data[0], dict) or "id" not in data[0]:
                raise UnpactError(f"{self.url}/models lists no model; is this an OpenAI-compatible endpoint?")
            self._model = str(data[0]["id"])
        return self._model

    def complete(self, prompt: str, **options) -> dict:
        """One ``POST /completions`` for one prompt; returns ``choices[0]`` (text, logprobs, …)."""
        body = {"model": self.model(), "prompt": prompt, **options}
        choices = self._request("POST", "/completions", body).get("choices")
        if not choices:
            raise UnpactError(f"{self.url}/completions returned no choices for a prompt of {len(prompt)} characters")
        return choices[0]

    def map(self, fn: Callable, items: Sequence, progress: Callable[[int, int], None] | None = None) -> list:
        """``[fn(x) for x in items]`` with ``concurrency`` calls in flight (order kept)."""
        if self.concurrency == 1 or len(items) <= 1:
            out = []
            for i, x in enumerate(items, 1):
                out.append(fn(x))
                if progress:
                    progress(i, len(items))
            return out
        with ThreadPoolExecutor(self.concurrency) as pool:
            out = []
            for i, y in enumerate(pool.map(fn, items), 1):
                out.append(y)
                if progress:
                    progress(i, len(items))
            return out


def unique(values: Iterable[str]) -> list[str]:
    """``values`` without repeats, first occurrence order (requests are made once per distinct text)."""
    return list(dict.fromkeys(values))
