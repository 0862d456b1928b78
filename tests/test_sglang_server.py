"""The SGLang rollout path against a REAL sglang-jax server on CPU.

One shared server (tiny head_dim-128 Qwen3 with the real Qwen3 vocabulary + tokenizer,
written at test time with our own ``save_hf_checkpoint``) is shared by the tests in this file;
the tests that restart or kill it run last and leave it serving the current weights.

Needs .venv-sglang (``make sglang-venv``).
"""
from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import time
from typing import Any

import jax
import numpy as np
import pytest

from orchestra_jax.rollout.engine import SamplingParams
from orchestra_jax.rollout.launcher import (REPO_ROOT, ServerStartError, SGLangServer, group_pids)
from orchestra_jax.rollout.logprob_check import logprob_gap
from orchestra_jax.rollout.sglang_client import SGLangEngine
from orchestra_jax.rollout.weight_sync import WeightSync, export_checkpoint

pytestmark = pytest.mark.server

SGL_PYTHON = REPO_ROOT / ".venv-sglang" / "bin" / "python"
EOS = 151645  # <|im_end|>
PROMPT_LENGTHS = (3, 8, 17, 33)


def _server_config(model_path: str, log_dir: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location("sglang_cpu", REPO_ROOT / "configs" / "sglang_cpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config()
    cfg.model_path = model_path
    cfg.log_dir = log_dir
    return cfg


def _make_params(config, seed: int, embed_scale: float = 10.0, layer_scale: float = 10.0) -> Any:
    """Random params with weights ~10x the init scale (norm scales stay 1).

    At the default std 0.02 a random model's logits are nearly flat over 151,936 tokens, so greedy
    argmax margins would be comparable to float noise; scaled up, the top-2 logit margins are
    > 1e-2 and the outputs depend on the context (not just a copy of the last token).
    """
    from orchestra_jax.models import init_params

    def scale(path, x):
        is_norm = any(getattr(k, "key", None) == "scale" for k in path)
        if is_norm:
            return x
        return x * (embed_scale if getattr(path[0], "key", None) == "embed" else layer_scale)

    return jax.tree_util.tree_map_with_path(scale, init_params(config, jax.random.key(seed)))


@dataclasses.dataclass
class Live:
    server: SGLangServer
    config: Any
    params: Any
    tokenizer_dir: pathlib.Path
    tmp: pathlib.Path


@pytest.fixture(scope="module")  # one server for this file; torn down before other files run
def live(tmp_path_factory):
    if not SGL_PYTHON.exists():
        pytest.fail(f"{SGL_PYTHON} missing: run `make sglang-venv` (sglang-jax needs its own venv)")
    from orchestra_jax.chat.tokenizer import load_tokenizer
    from orchestra_jax.models import presets

    t0 = time.perf_counter()
    tmp = tmp_path_factory.mktemp("sglang")
    tok_dir = tmp / "tokenizer"
    load_tokenizer().save_pretrained(str(tok_dir))
    config = presets["tiny-hd128"].replace(dtype="float32", max_position_embeddings=512)
    params = _make_params(config, seed=0)
    ckpt = export_checkpoint(config, params, tmp / "ckpt0", tokenizer_dir=tok_dir)
    t1 = time.perf_counter()
    server = SGLangServer(_server_config(str(ckpt), str(tmp / "logs")))
    server.start()
    print(f"\ncheckpoint + tokenizer written in {t1 - t0:.1f} s; sglang-jax server healthy after "
          f"{server.startup_s:.1f} s at {server.url}")
    try:
        yield Live(server, config, params, tok_dir, tmp)
    finally:
        pgid = server.pid
        server.stop()
        assert pgid is None or group_pids(pgid) == []


def _prompts(n_lengths=PROMPT_LENGTHS, seed=1) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 151643, size=n).tolist() for n in n_lengths]


async def _both(live: Live, prompts, sampling):
    from orchestra_jax.rollout.local_engine import LocalJaxEngine
    async with SGLangEngine([live.server.url], request_timeout_s=120,
                            vocab_size=live.config.vocab_size, max_context=512) as remote:
        r = await remote.generate(prompts, sampling)
    local = LocalJaxEngine(live.config, live.params)
    return r, await local.generate(prompts, sampling)


def _assert_greedy_parity(live: Live, prompts, max_new_tokens=16):
    sp = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop_token_ids=(EOS,))
    remote, local = asyncio.run(_both(live, prompts, sp))
    for p, r, l in zip(prompts, remote, local):
        assert r.error is None, r.error
        assert r.token_ids == l.token_ids, f"prompt len {len(p)}: server {r.token_ids} != local {l.token_ids}"
        assert r.finish_reason == l.finish_reason
        assert r.prompt_tokens == len(p)
    return remote


def test_greedy_matches_local_sampler(live):
    remote = _assert_greedy_parity(live, _prompts())
    assert len({tuple(r.token_ids) for r in remote}) > 1  # distinct prompts → distinct outputs


def test_logprobs_match_trainer_forward(live):
    prompts = _prompts(seed=2)
    greedy = SamplingParams(max_new_tokens=16, temperature=0.0, stop_token_ids=(EOS,))
    # > 50 tokens: exercises the client's fix for sglang-jax re-sending logprobs every 50 tokens.
    sampled = SamplingParams(max_new_tokens=120, temperature=1.0, stop_token_ids=(EOS,), seed=3)

    async def run():
        async with SGLangEngine([live.server.url], request_timeout_s=120) as eng:
            return await eng.generate(prompts, greedy), await eng.generate(prompts, sampled)

    out_greedy, out_sampled = asyncio.run(run())
    for name, outs in (("greedy", out_greedy), ("temperature 1", out_sampled)):
        gap = logprob_gap(live.config, live.params, prompts, outs)
        print(f"\nserver vs trainer log-prob gap ({name}): mean |Δ| {gap['mean_abs']:.2e}, "
              f"max |Δ| {gap['max_abs']:.2e} over {gap['n_tokens']} tokens")
        assert gap["n_tokens"] >= 4 * len(prompts)
        assert gap["mean_abs"] <= 1e-3


def test_openai_chat_completions_usage_and_cost(live):
    from orchestra_jax.chat.tokenizer import load_tokenizer
    from orchestra_jax.tools.llm_client import ExpertConfig, OpenAIChatClient
    from orchestra_jax.tools.pricing import PriceSheet

    prices = PriceSheet.from_dict({"name": "test", "models": {"local-expert": {
        "usd_per_1m_input_tokens": 0.6, "usd_per_1m_output_tokens": 2.4}}})
    client = OpenAIChatClient(ExpertConfig(base_url=live.server.url + "/v1", model="local-expert",
                                           timeout_s=60), prices=prices)
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What is 2 + 2?"}]

    async def run():
        async with client:
            return await client.chat(messages, max_tokens=12, temperature=0.0)

    resp = asyncio.run(run())
    tok = load_tokenizer(str(live.tokenizer_dir))
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tok.encode(text, add_special_tokens=False)
    assert resp.prompt_tokens == len(prompt_ids)
    assert 1 <= resp.completion_tokens <= 12
    assert resp.cost_usd == pytest.approx(
        (resp.prompt_tokens * 0.6 + resp.completion_tokens * 2.4) / 1e6, rel=1e-12)
    # Same prompt through /generate: the server's own token counts agree with the usage block.
    sp = SamplingParams(max_new_tokens=12, temperature=0.0, stop_token_ids=(EOS,))
    [out] = SGLangEngine([live.server.url]).generate_sync([prompt_ids], sp)
    assert out.prompt_tokens == resp.prompt_tokens and len(out.token_ids) == resp.completion_tokens


def test_bad_checkpoint_fails_with_log_tail(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"architectures": ["NoSuchModelForCausalLM"], "model_type": "nope"}')
    server = SGLangServer(_server_config(str(bad), str(tmp_path / "logs")))
    t0 = time.perf_counter()
    with pytest.raises(ServerStartError) as e:
        server.start()
    assert time.perf_counter() - t0 < 120
    assert "exited with code" in str(e.value) and len(str(e.value).splitlines()) > 3
    assert server.proc is None


def test_weight_sync_inprocess_serves_new_params(live):
    """sglang-jax started through sgl_jax_server.py: weights swapped inside the running server."""
    from orchestra_jax.rollout.weight_sync import WeightSyncError

    prompts = _prompts(seed=4)
    sp = SamplingParams(max_new_tokens=12, temperature=0.0, stop_token_ids=(EOS,))
    old = SGLangEngine([live.server.url]).generate_sync(prompts, sp)
    sync = WeightSync([live.server], tokenizer_dir=live.tokenizer_dir,
                      export_root=live.tmp / "exports")
    assert sync.mode == "inprocess"
    pid = live.server.pid
    new_params = _make_params(live.config, seed=7)
    result = sync.sync(live.config, new_params)
    print(f"\n{result}")
    assert live.server.pid == pid  # same process: nothing restarted
    live.params = new_params
    new = _assert_greedy_parity(live, prompts, max_new_tokens=12)
    assert [o.token_ids for o in new] != [o.token_ids for o in old]

    # While a request runs the server refuses (and keeps serving the current weights).
    async def busy_sync():
        eng = SGLangEngine([live.server.url], request_timeout_s=60)
        task = asyncio.ensure_future(eng.generate(
            [prompts[0]], SamplingParams(max_new_tokens=400, temperature=1.0, seed=1)))
        while eng.servers[0].in_flight == 0:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        with pytest.raises(WeightSyncError, match="busy"):
            await asyncio.to_thread(sync.sync, live.config, _make_params(live.config, seed=8))
        [out] = await task
        assert out.error is None
        await eng.aclose()

    asyncio.run(busy_sync())
    _assert_greedy_parity(live, prompts[:2], max_new_tokens=8)


@pytest.mark.slow
def test_weight_sync_restart_serves_new_params(live):
    """The fallback for a stock sglang-jax server: restart on the new checkpoint, same port."""
    sync = WeightSync([live.server], mode="restart", tokenizer_dir=live.tokenizer_dir,
                      export_root=live.tmp / "exports_restart")
    url = live.server.url
    live.params = _make_params(live.config, seed=0)
    result = sync.sync(live.config, live.params)
    print(f"\n{result}")
    assert live.server.url == url  # same port: clients keep working
    _assert_greedy_parity(live, _prompts(seed=4), max_new_tokens=12)


class _ChatterEnv:
    """A tool-free environment: every turn gets a short user reply; it never ends by itself, so
    episodes run until the context fills (or the engine fails)."""

    tool_names: list = []

    def __init__(self, i: int):
        self.task_id = f"chatter-{i}"

    async def reset(self):
        from orchestra_jax.envs.base import EnvStart
        return EnvStart(messages=[{"role": "user", "content": f"Tell me a story, part {self.task_id}."}],
                        tools=[])

    async def step(self, turn):
        from orchestra_jax.envs.base import EnvStep
        return EnvStep(observations=["Go on."])

    async def finish(self, finish_reason):
        from orchestra_jax.envs.base import EnvOutcome
        return EnvOutcome(reward=0.0, correct=False)


@pytest.mark.slow
def test_kill_mid_batch_fails_episodes_cleanly_then_restart(live):
    """SIGKILL the server while episodes (episode runner → SGLangEngine) wait on it."""
    from orchestra_jax.chat.assembly import ContextLimits
    from orchestra_jax.chat.tokenizer import load_tokenizer
    from orchestra_jax.rollout.episode import EpisodeConfig
    from orchestra_jax.rollout.runner import run_episodes

    server = live.server
    pgid = server.pid
    assert len(server.process_ids()) >= 2  # http server + scheduler (+ detokenizer)
    tok = load_tokenizer(str(live.tokenizer_dir))
    timeout_s = 30.0
    cfg = EpisodeConfig(max_turns=20, temperature=1.0, turn_timeout_s=timeout_s,
                        episode_timeout_s=2 * timeout_s,
                        limits=ContextLimits(max_prompt_tokens=400, max_new_tokens_per_turn=96,
                                             max_total_tokens=500))

    async def episodes(eng, n):
        return await run_episodes(eng, tok, [_ChatterEnv(i) for i in range(n)], cfg,
                                  concurrency=n, progress=False)

    async def batch_then_kill():
        eng = SGLangEngine([server.url], request_timeout_s=timeout_s, max_retries=2)
        task = asyncio.ensure_future(episodes(eng, 6))
        while eng.servers[0].in_flight == 0 and not task.done():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        server.kill()
        t0 = time.perf_counter()
        trajs = await task
        await eng.aclose()
        return trajs, time.perf_counter() - t0

    trajs, elapsed = asyncio.run(asyncio.wait_for(batch_then_kill(), timeout=2 * timeout_s))
    assert elapsed < timeout_s
    failed = [t for t in trajs if t.finish_reason == "error"]
    assert failed, f"the kill should have hit in-flight episodes: {[t.finish_reason for t in trajs]}"
    for t in failed:
        assert "engine error" in t.error and ("server unavailable" in t.error or "timeout" in t.error), t.error
    # Nothing of the dead server may keep running (zombies aside, which stop() reaps).
    deadline = time.time() + 10
    while group_pids(pgid) and time.time() < deadline:
        time.sleep(0.1)
    assert group_pids(pgid) == []
    server.stop()
    # The next batch runs after a restart.
    server.start()
    next_batch = asyncio.run(episodes(SGLangEngine([server.url], request_timeout_s=timeout_s), 2))
    assert all(t.finish_reason in ("context", "max_turns") and t.num_turns >= 1 for t in next_batch), \
        [(t.finish_reason, t.error) for t in next_batch]
    _assert_greedy_parity(live, _prompts((4, 11), seed=6), max_new_tokens=8)


_ORPHAN_SCRIPT = """
import os, sys, importlib.util
sys.path.insert(0, {repo!r})
from orchestra_jax.rollout.launcher import SGLangServer
spec = importlib.util.spec_from_file_location("c", {repo!r} + "/configs/sglang_cpu.py")
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
cfg = mod.get_config(); cfg.model_path = {ckpt!r}; cfg.log_dir = {logs!r}
server = SGLangServer(cfg).start()
print(server.pid, flush=True)
if {hard!r}:
    os.kill(os.getpid(), 9)   # the trainer dies without any clean-up
# else: normal interpreter exit without server.stop() -> the atexit hook
"""


@pytest.mark.slow
@pytest.mark.parametrize("hard", [False, True], ids=["atexit", "sigkill-parent"])
def test_server_never_outlives_its_launcher(live, hard):
    import os
    import subprocess
    import sys
    import tempfile
    tmp_root = pathlib.Path(tempfile.gettempdir())
    before = set(tmp_root.glob("orchestra_sglang_*"))
    script = _ORPHAN_SCRIPT.format(repo=str(REPO_ROOT), ckpt=live.server.model_path,
                                   logs=str(live.tmp / "orphan_logs"), hard=hard)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    pgid = int(proc.stdout.split()[0])
    deadline = time.time() + 20
    while group_pids(pgid) and time.time() < deadline:
        time.sleep(0.2)
    assert group_pids(pgid) == [], f"server group {pgid} outlived its launcher (hard={hard})"
    # its private TMPDIR goes too (removed by stop() via atexit, or by the server's watchdog)
    assert set(tmp_root.glob("orchestra_sglang_*")) <= before
