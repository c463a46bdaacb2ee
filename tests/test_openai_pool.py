"""The openai backend over a pool of base URLs: round-robin, retry on the next server, one concurrency limit."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmrank.backends.openai import OpenAIBackend


class _Server:
    """A tiny OpenAI-compatible /v1/completions server that answers with its own name."""

    def __init__(self, name: str):
        self.name, self.hits, self.open, self.max_open = name, 0, 0, 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    outer.hits += 1
                answer = {"choices": [{"index": 0, "text": f"{outer.name}:{body['prompt']}"}],
                          "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pool():
    servers = [_Server("a"), _Server("b")]
    yield servers
    for s in servers:
        s.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_requests_spread_over_the_pool(pool):
    backend = OpenAIBackend("m", base_url=",".join(s.url for s in pool), mode="completions", concurrency=2)
    assert backend.base_urls == [s.url + "/v1" for s in pool]
    gens = backend.generate([f"p{i}" for i in range(6)])
    assert [g.text.split(":")[1] for g in gens] == [f"p{i}" for i in range(6)]  # answers stay aligned
    assert [s.hits for s in pool] == [3, 3]
    assert backend.stats["calls"] == 6 and backend.stats["prompt_tokens"] == 18
    assert backend.default_in_flight == 8
    backend.close()


def test_a_dead_server_is_skipped_by_the_retry(pool):
    dead = f"http://127.0.0.1:{_free_port()}"
    backend = OpenAIBackend("m", base_url=[dead, pool[0].url], mode="completions", concurrency=1, backoff=0.01)
    gens = backend.generate([f"p{i}" for i in range(4)])
    assert all(g.text.startswith("a:") for g in gens) and pool[0].hits == 4
    backend.close()
