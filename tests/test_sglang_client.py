"""SGLangEngine client behaviour against small local HTTP servers that speak the /generate protocol.

These check the client's own logic (load spreading, dead servers, timeout → /abort_request,
retries, concurrency cap, response parsing) with servers that can be made slow, broken or absent
on demand — things a real sglang-jax server cannot be made to do reliably. The real-server
behaviour is covered by tests/test_sglang_server.py.
"""
from __future__ import annotations

import asyncio
import http.server
import json
import pathlib
import socket
import threading
import time

import pytest

from orchestra_jax.rollout.engine import SamplingParams
from orchestra_jax.rollout.sglang_client import SGLangEngine, parse_generate_response


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            self._send(200, {})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        fake: FakeServer = self.server.fake  # type: ignore[attr-defined]
        n = int(self.headers.get("Content-Length", 0))
        req = json.loads(self.rfile.read(n) or b"{}")
        if self.path == "/abort_request":
            with fake.lock:
                fake.aborted.append(req.get("rid"))
            fake.abort_event.set()
            self._send(200, {})
            return
        if self.path == "/update_weights_from_disk" and fake.weight_updates is not None:
            import os
            path = req.get("model_path", "")
            ok = os.path.isfile(os.path.join(path, "config.json")) and any(
                f.endswith(".safetensors") for f in os.listdir(path))
            with fake.lock:
                fake.weight_updates.append(req)
            self._send(200 if ok else 400, {"success": ok, "message": "loaded" if ok else "bad path",
                                            "num_paused_requests": 0})
            return
        if self.path != "/generate":
            self._send(404, {"error": "not found"})
            return
        with fake.lock:
            fake.requests.append(req)
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            fail = fake.fail_next > 0
            if fail:
                fake.fail_next -= 1
        try:
            if fail:
                self._send(500, {"error": "internal"})
                return
            if fake.hang:
                fake.abort_event.wait(timeout=30)
                self._send(200, _answer(req, [fake.index], abort=True))
                return
            time.sleep(fake.delay_s)
            self._send(200, _answer(req, [fake.index] * 3))
        finally:
            with fake.lock:
                fake.in_flight -= 1


def _answer(req, ids, abort=False):
    stop = req["sampling_params"].get("stop_token_ids") or []
    fr = {"type": "abort", "message": "aborted"} if abort else (
        {"type": "stop", "matched": ids[-1]} if ids[-1] in stop else {"type": "length", "length": len(ids)})
    return {"text": "", "output_ids": ids,
            "meta_info": {"id": req["rid"], "finish_reason": fr, "prompt_tokens": len(req["input_ids"]),
                          "completion_tokens": len(ids),
                          "output_token_logprobs": [[-0.5 - i, t, None] for i, t in enumerate(ids)]}}


class FakeServer:
    def __init__(self, index: int, delay_s: float = 0.0, hang: bool = False,
                 weight_endpoint: bool = False):
        self.index, self.delay_s, self.hang = index, delay_s, hang
        self.weight_updates: list[dict] | None = [] if weight_endpoint else None
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.aborted: list[str] = []
        self.abort_event = threading.Event()
        self.in_flight = self.max_in_flight = 0
        self.fail_next = 0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.fake = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.abort_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fakes():
    made = []

    def make(**kw):
        s = FakeServer(len(made) + 1, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


GREEDY = SamplingParams(max_new_tokens=3, temperature=0.0, stop_token_ids=(99,))


def test_payload_fields():
    body = SGLangEngine.payload([1, 2, 3], SamplingParams(max_new_tokens=7, temperature=0.7, top_p=0.9,
                                                          top_k=5, stop_token_ids=(2, 9), seed=11), "r1")
    assert body["input_ids"] == [1, 2, 3] and body["rid"] == "r1" and body["return_logprob"] is True
    sp = body["sampling_params"]
    assert sp == {"max_new_tokens": 7, "temperature": 0.7, "top_p": 0.9, "top_k": 5, "no_stop_trim": True,
                  "skip_special_tokens": False, "spaces_between_special_tokens": False,
                  "stop_token_ids": [2, 9], "sampling_seed": 11}


def test_load_spreads_across_two_servers(fakes):
    a, b = fakes(delay_s=0.2), fakes(delay_s=0.2)
    eng = SGLangEngine([a.url, b.url], max_concurrency=8, request_timeout_s=10)
    outs = asyncio.run(eng.generate([[5, 6, 7]] * 8, GREEDY))
    assert all(o.finish_reason == "length" and o.error is None for o in outs)
    assert len(a.requests) == 4 and len(b.requests) == 4  # least-in-flight → an even split
    assert sorted({o.token_ids[0] for o in outs}) == [1, 2]
    assert outs[0].logprobs == [-0.5, -1.5, -2.5] and outs[0].prompt_tokens == 3
    assert [s.served for s in eng.servers] == [4, 4]


def test_dead_url_is_skipped(fakes):
    live = fakes()
    eng = SGLangEngine([_dead_url(), live.url], max_concurrency=1, request_timeout_s=10,
                       dead_server_cooldown_s=60)
    t0 = time.perf_counter()
    outs = asyncio.run(eng.generate([[1, 2]] * 6, GREEDY))
    assert all(o.error is None and o.token_ids == [1, 1, 1] for o in outs)
    assert len(live.requests) == 6
    assert eng.servers[0].failures == 1  # tried once, then skipped while marked dead
    assert time.perf_counter() - t0 < 5


def test_timeout_sends_abort_and_returns_failed_output(fakes):
    slow = fakes(hang=True)
    eng = SGLangEngine([slow.url], request_timeout_s=0.5)
    t0 = time.perf_counter()
    [out] = asyncio.run(eng.generate([[3, 4, 5]], GREEDY))
    elapsed = time.perf_counter() - t0
    assert out.finish_reason == "error" and "timeout" in out.error and "abort_request" in out.error
    assert elapsed < 3.0
    rid = slow.requests[0]["rid"]
    assert slow.aborted == [rid]


def test_5xx_is_retried_on_the_other_server(fakes):
    a, b = fakes(), fakes()
    a.fail_next = b.fail_next = 1
    eng = SGLangEngine([a.url, b.url], max_concurrency=1, max_retries=2, request_timeout_s=10)
    [out] = asyncio.run(eng.generate([[1]], GREEDY))
    assert out.error is None and len(a.requests) + len(b.requests) == 3


def test_all_servers_down_fails_fast_with_clear_error():
    eng = SGLangEngine([_dead_url(), _dead_url()], max_retries=3, request_timeout_s=30,
                       retry_backoff_s=0.05)
    t0 = time.perf_counter()
    outs = asyncio.run(eng.generate([[1, 2], [3]], GREEDY))
    assert time.perf_counter() - t0 < 5
    for o in outs:
        assert o.finish_reason == "error" and "ConnectError" in o.error and o.token_ids == []


def test_concurrency_cap_and_reuse_across_event_loops(fakes):
    srv = fakes(delay_s=0.1)
    eng = SGLangEngine([srv.url], max_concurrency=2, request_timeout_s=10)
    for _ in range(2):  # a second asyncio.run gets a fresh client bound to its own loop
        outs = asyncio.run(eng.generate([[1]] * 6, GREEDY))
        assert all(o.error is None for o in outs)
    assert srv.max_in_flight == 2


def test_queueing_for_a_slot_does_not_count_against_the_timeout(fakes):
    srv = fakes(delay_s=0.3)
    eng = SGLangEngine([srv.url], max_concurrency=1, request_timeout_s=0.6)
    outs = asyncio.run(eng.generate([[1]] * 4, GREEDY))  # ~1.2 s in total, 0.3 s each
    assert all(o.error is None for o in outs) and srv.aborted == []


def test_health_reports_each_server(fakes):
    live = fakes()
    dead = _dead_url()
    eng = SGLangEngine([live.url, dead])
    assert asyncio.run(eng.health()) == {live.url: True, dead: False}


def test_empty_prompt_is_a_clear_error(fakes):
    eng = SGLangEngine([fakes().url])
    [out] = asyncio.run(eng.generate([[]], GREEDY))
    assert out.finish_reason == "error" and "empty prompt" in out.error


def test_bad_prompts_never_reach_the_server(fakes):
    srv = fakes()
    eng = SGLangEngine([srv.url], vocab_size=1000, max_context=16)
    outs = asyncio.run(eng.generate([[5, -3], [5, 1000], [5, 1.5], list(range(16))], GREEDY))
    assert [o.finish_reason for o in outs] == ["error"] * 4
    assert "id -3, outside [0, 1000)" in outs[0].error and "id 1000" in outs[1].error
    assert "not an integer" in outs[2].error and "fills the context" in outs[3].error
    assert srv.requests == []
    # max_new_tokens is capped to the room left in the context
    [out] = asyncio.run(eng.generate([list(range(14))], SamplingParams(max_new_tokens=50)))
    assert out.error is None and srv.requests[0]["sampling_params"]["max_new_tokens"] == 2


def test_parse_response_variants():
    req = {"rid": "x", "input_ids": [1, 2], "sampling_params": {"stop_token_ids": [7]}}
    out = parse_generate_response(_answer(req, [4, 7]), 2, 0.1)
    assert out.finish_reason == "stop" and out.token_ids == [4, 7] and out.logprobs == [-0.5, -1.5]
    out = parse_generate_response(_answer(req, [4], abort=True), 2, 0.1)
    assert out.finish_reason == "error" and "aborted" in out.error
    # sglang-jax 0.1.0rc0 re-sends the logprob prefix every 50 tokens: lp[:50] + lp[:120]
    ids = list(range(100, 220))
    dup = _answer(req, ids)
    pairs = dup["meta_info"]["output_token_logprobs"]
    dup["meta_info"]["output_token_logprobs"] = pairs[:50] + pairs
    out = parse_generate_response(dup, 2, 0.1)
    assert out.token_ids == ids and out.logprobs == [p[0] for p in pairs]
    bad = _answer(req, [4, 5])
    bad["output_ids"] = [4, 6]
    with pytest.raises(ValueError, match="disagree"):
        parse_generate_response(bad, 2, 0.1)
    del bad["meta_info"]["output_token_logprobs"]
    with pytest.raises(ValueError, match="output_token_logprobs"):
        parse_generate_response(bad, 2, 0.1)


def test_constructor_validation():
    with pytest.raises(ValueError):
        SGLangEngine([])
    with pytest.raises(ValueError):
        SGLangEngine(["http://x"], max_concurrency=0)
    with pytest.raises(ValueError):
        SGLangEngine(["http://x"], request_timeout_s=0)


def _tiny_model():
    import jax

    from orchestra_jax.models import init_params, presets
    config = presets["tiny"]
    return config, init_params(config, jax.random.key(0))


def test_weight_sync_disk_mode_posts_update_weights_from_disk(fakes, tmp_path):
    """The upstream-SGLang path: export to disk, then POST /update_weights_from_disk everywhere."""
    from orchestra_jax.rollout.weight_sync import WeightSync
    a, b = fakes(weight_endpoint=True), fakes(weight_endpoint=True)
    sync = WeightSync(urls=[a.url, b.url], export_root=tmp_path / "w")
    assert sync.mode == "disk"
    config, params = _tiny_model()
    res = sync.sync(config, params)
    res2 = sync.sync(config, params)
    for srv in (a, b):
        assert [u["weight_version"] for u in srv.weight_updates] == ["1", "2"]
        assert srv.weight_updates[-1]["model_path"] == res2.path
        assert srv.weight_updates[-1]["flush_cache"] is True
    assert res.export_s > 0 and res.update_s > 0 and res.mode == "disk"
    # keep_last=1: the first export is gone, the served one stays.
    assert not pathlib.Path(res.path).exists() and pathlib.Path(res2.path, "config.json").exists()


def test_weight_sync_disk_mode_reports_missing_endpoint(fakes, tmp_path):
    from orchestra_jax.rollout.weight_sync import WeightSync, WeightSyncError
    srv = fakes()  # like sglang-jax: no /update_weights_from_disk
    sync = WeightSync(urls=[srv.url], mode="disk", export_root=tmp_path / "w")
    config, params = _tiny_model()
    with pytest.raises(WeightSyncError, match="no /update_weights_from_disk endpoint"):
        sync.sync(config, params)
    # the export of a failed sync is not leaked (exports usually live in RAM, under /dev/shm)
    assert len(list((tmp_path / "w").iterdir())) == 1
    sync.close()
    assert list((tmp_path / "w").iterdir()) == []
    with pytest.raises(ValueError, match="restart"):
        WeightSync(urls=[srv.url], mode="restart")


def test_inprocess_update_key_matches_server_hook():
    """weight_sync and sgl_jax_server.py (runs in the sglang-jax venv) agree on the state key."""
    import re

    from orchestra_jax.rollout import weight_sync
    src = (pathlib.Path(weight_sync.__file__).with_name("sgl_jax_server.py")).read_text()
    assert re.search(r'^UPDATE_KEY = "(.+)"$', src, re.M).group(1) == weight_sync.INPROCESS_UPDATE_KEY
