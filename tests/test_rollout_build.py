"""rollout/build.py: per-task randomisation, config -> parts, group rollouts that carry their run
metadata, and failure isolation (bad task, failing expert, judge without verdict, dead / hung
SGLang server) feeding the validity mask of the Eq. 2 reward. Tiny real model, real HTTP."""
import asyncio
import json
import random
import socket

import jax
import numpy as np
import pytest
from tools_fault_server import FaultServer

from orchestra_jax.chat.tokenizer import load_tokenizer
from orchestra_jax.data.preferences import TemplatePreferences, check_preference
from orchestra_jax.envs.qa import QAEnv, paper_tool_names
from orchestra_jax.models import init_params, presets
from orchestra_jax.rl.advantages import grpo_advantages
from orchestra_jax.rl.rewards import preference_reward
from orchestra_jax.rollout.build import (QA_TOOLS, RolloutSpec, build_rollout, preference_keys,
                                         randomise_task)
from orchestra_jax.rollout.episode import EpisodeConfig, run_episode
from orchestra_jax.rollout.local_expert import LocalChatModel
from orchestra_jax.rollout.runner import run_episodes, summarize
from orchestra_jax.rollout.scripted_engine import ScriptedPolicyEngine
from orchestra_jax.rollout.sglang_client import SGLangEngine
from orchestra_jax.rollout.trajectory import group_validity, reward_inputs
from orchestra_jax.tools.aliases import ModelMapping
from orchestra_jax.tools.llm_client import ExpertConfig, OpenAIChatClient
from orchestra_jax.tools.meta_tools import QAToolkit, QAToolkitConfig
from orchestra_jax.tools.pricing import PriceSheet

PREFS = TemplatePreferences()
RANDOM = {"mapping": "sampled_counts", "pricing": "sampled", "tool_subset": "random",
          "preference": "train", "out": "ignored-by-the-builder"}
TASK = {"id": "q42", "question": "What is 6 times 7?", "answer": "42"}
END = "<|im_end|>"


def call(name, **args):
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>" + END


def test_randomise_task_is_deterministic_and_consistent():
    a = randomise_task(7, RANDOM, QA_TOOLS, PREFS)
    b = randomise_task(random.Random(7), RANDOM, QA_TOOLS, PREFS)
    assert a.meta("g", 0) == b.meta("g", 0) and a.tools == b.tools
    setups = [randomise_task(s, RANDOM, QA_TOOLS, PREFS) for s in range(24)]
    assert len({s.tools for s in setups}) > 1 and all("answer" in s.tools for s in setups)
    assert len({s.price_sheet_id for s in setups}) > 1
    assert len({json.dumps(s.mapping.aliases, sort_keys=True) for s in setups}) > 1
    assert len({s.preference.kind for s in setups}) > 2
    spec = RolloutSpec.from_config(RANDOM)
    for s in setups:
        assert list(s.tool_names) == paper_tool_names(s.tools, s.mapping, "local")
        assert len(s.preference.vector) == len(s.tool_names) + 3
        assert check_preference(s.preference, s.tool_names, display_names=s.display_names) == []
        assert s.prices.has("Qwen/Qwen3-8B") and all(s.prices.has(m) for m in s.mapping.models())
        # a model is named by the aliases it is offered under in this task
        for model, shown in s.display_names.items():
            assert all(s.mapping.model_of(a) == model for a in shown.split(" or "))
        assert preference_keys(spec, s.tools, s.mapping)[0] == list(s.tool_names)
    assert randomise_task(0, {"preference": "none"}, QA_TOOLS).preference is None
    assert randomise_task(0, {"preference": "default"}, QA_TOOLS, PREFS).preference.vector[-2:] \
        == [0.5, 0.5]
    with pytest.raises(ValueError, match="preference source"):
        randomise_task(0, {"preference": "train"}, QA_TOOLS)
    with pytest.raises(ValueError, match="mapping must be one of"):
        RolloutSpec.from_config({"mapping": "random"})
    with pytest.raises(ValueError, match="unknown rollout config keys"):
        RolloutSpec.from_config({"max_turn": 3}, strict=True)
    tau2 = randomise_task(1, {"env": "tau2", "tasks": "mock", "preference": "train"},
                          ("get_user", "create_task", "transfer_to_human_agents"), PREFS)
    assert list(tau2.tool_names) == ["get_user", "create_task", "Qwen/Qwen3-32B", "gpt-5",
                                     "gpt-5-mini"]
    assert not set(tau2.preference.targets) & {"get_user", "create_task"}


def test_counts_are_keyed_by_model_and_basic_tool_and_refusals_do_not_count():
    from orchestra_jax.chat.parser import ParsedTurn
    mapping, sheet = ModelMapping.paper_eval(), PriceSheet.load("paper_eval")
    kit = QAToolkit(mapping=mapping, experts={}, prices=sheet, web=object(),
                    config=QAToolkitConfig(search_backend="web", answer_requires_documents=True))
    env = QAEnv(TASK, kit)
    assert env.tool_names[:2] == ["web_search", "code_interpreter"]
    assert "gpt-5" in env.tool_names and "search-1" not in env.tool_names
    answer = {"name": "answer", "arguments": {"model": "answer-1"}}
    step = asyncio.run(env.step(ParsedTurn(calls=[answer], format_ok=True)))
    assert "not allowed" in step.observations[0]
    assert step.tool_keys == [] and step.info["aliases"] == [] and step.cost_usd == 0.0
    assert step.infra_error is None


@pytest.fixture(scope="module")
def world():
    tok = load_tokenizer()
    cfg = presets["tiny-hd128"]
    return tok, cfg, init_params(cfg, jax.random.key(5))


def answerer(world, text):
    tok, cfg, params = world
    return LocalChatModel(ScriptedPolicyEngine(cfg, params, [text + END] * 4, tok), tok,
                          model="scripted-answerer")


def test_group_rollout_carries_run_metadata(world, tmp_path):
    """A group built from a config: P and its instruction, mapping, sampled price sheet (which
    also prices the orchestrator's own tokens), sampling, engine, log-prob convention and
    policy version reach every record; reward_inputs + Eq. 2 run on the group."""
    tok, cfg, params = world
    setup = randomise_task(3, RANDOM, ("answer",), PREFS)
    alias = setup.mapping.available("answer")[0]
    engine = ScriptedPolicyEngine(cfg, params, [call("answer", model=alias)] * 2, tok)
    engine.policy_version = 7
    parts = build_rollout({**RANDOM, "max_turns": 2, "max_new_tokens_per_turn": 64},
                          preferences=PREFS, engine=engine, tokenizer=tok)
    parts.experts = {m: answerer(world, "\\boxed{42}") for m in setup.mapping.models()}
    envs, metas = parts.group(TASK, setup, group_id="step0/q42", size=2)
    trajs = asyncio.run(run_episodes(parts.engine, tok, envs, parts.episode_config,
                                     concurrency=1, progress=False, metas=metas))
    p_in = setup.prices.price("Qwen/Qwen3-8B").usd_per_1m_input_tokens
    for i, t in enumerate(trajs):
        assert t.error is None and t.correct and not t.infra_error, t.error
        t.validate()
        assert (t.group_id, t.rollout_index) == ("step0/q42", i)
        assert t.preference == setup.preference.vector and t.tool_names == list(setup.tool_names)
        assert t.preference_kind == setup.preference.kind
        assert t.info["preference_in_prompt"] and setup.preference.instruction in tok.decode(t.tokens)
        assert t.model_mapping == setup.mapping.aliases and t.price_sheet_id == setup.price_sheet_id
        assert t.sampling["temperature"] == 1.0 and t.sampling["max_new_tokens"] == 64
        assert (t.engine, t.logprob_convention) == ("ScriptedPolicyEngine", "pre_temperature")
        assert [r.policy_version for r in t.turns] == [7]
        assert t.info["policy_price"]["usd_per_1m_input_tokens"] == p_in
        assert dict(zip(t.tool_names, t.tool_counts))[setup.mapping.model_of(alias)] == 1
    inputs = reward_inputs(trajs)
    r = preference_reward(inputs["tool_counts"], inputs["correct"], inputs["cost"],
                          inputs["latency"], inputs["preference"], inputs["mask"])
    assert r.shape == (2,) and bool(np.all(np.isfinite(np.asarray(r))))
    s = summarize(trajs)
    assert s["context_finish_rate"] == 0.0 and s["infra_error_rate"] == 0.0 and s["accuracy"] == 1.0
    assert parts.engine is engine and parts.params is None


def test_failures_cost_only_their_episodes(world):
    """One group: a bad task, an expert whose server fails, a judge that gives no verdict, a wrong
    answer and a right one. Nothing raises; the infrastructure failures are flagged and masked
    out of the group's reward statistics; the wrong answer stays a real negative sample."""
    tok, cfg, params = world
    mapping, sheet = ModelMapping.paper_eval(), PriceSheet.load("paper_eval")
    kit_cfg = QAToolkitConfig(tools=("answer",))

    def env(experts, judge=None, task=TASK):
        model = mapping.model_of("answer-1")
        return QAEnv(task, QAToolkit(mapping=mapping, experts={model: experts}, prices=sheet,
                                     config=kit_cfg), judge=judge)

    with FaultServer([("json", 500, {"error": "expert down"}, {})]) as down, \
            FaultServer([("chat", "Hmm, hard to say.", 30, 200)]) as vague:
        failing = OpenAIChatClient(ExpertConfig(base_url=down.url + "/v1", model="gpt-5",
                                                timeout_s=5, max_retries=0))
        judge = OpenAIChatClient(ExpertConfig(base_url=vague.url + "/v1", model="gpt-5",
                                              timeout_s=5, max_retries=0))
        parts = build_rollout({"preference": "none"}, engine=object(), tokenizer=tok)
        setup = randomise_task(0, {"preference": "none"}, ("answer",))
        bad = parts.env_factory({"id": "broken", "question": "no reference"}, setup)
        envs = [bad, lambda: env(failing), lambda: env(answerer(world, "\\boxed{43}"), judge),
                lambda: env(answerer(world, "\\boxed{41}")), lambda: env(answerer(world, "\\boxed{42}"))]
        engine = ScriptedPolicyEngine(cfg, params, [call("answer", model="answer-1")] * 4, tok)
        trajs = asyncio.run(run_episodes(engine, tok, envs, EpisodeConfig(max_turns=1),
                                         concurrency=1, progress=False))
        (_, _, judge_body), = vague.requests
    broken, expert_down, no_verdict, wrong, right = trajs
    assert broken.finish_reason == "error" and "lacks 'answer'" in broken.error
    assert broken.infra_error
    assert expert_down.infra_error and "expert gpt-5 failed" in expert_down.infra_reason
    assert expert_down.turns[0].infra_error and expert_down.error is None
    assert no_verdict.infra_error and "no <correct> verdict" in no_verdict.infra_reason
    assert no_verdict.info["grade"]["method"] == "judge_no_verdict"
    assert judge_body["max_completion_tokens"] == 4096      # room for a reasoning judge
    assert not wrong.infra_error and wrong.correct is False and wrong.outcome == 0.0
    assert right.correct and not right.infra_error
    mask = group_validity(trajs)
    assert list(mask) == [False, False, False, True, True]
    inputs = reward_inputs(trajs, default_preference=[0.0] * len(right.tool_names) + [1, .5, .5])
    r = np.asarray(preference_reward(inputs["tool_counts"], inputs["correct"], inputs["cost"],
                                     inputs["latency"], inputs["preference"], inputs["mask"]))
    assert list(r[:3]) == [0, 0, 0] and r[3] == 0 and r[4] > 0
    adv = np.asarray(grpo_advantages(r, mask))
    assert list(adv[:3]) == [0, 0, 0] and adv[4] > 0 > adv[3]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_and_hung_rollout_servers_end_only_their_episodes(world):
    tok = world[0]
    mapping, sheet = ModelMapping.paper_eval(), PriceSheet.load("paper_eval")

    def env():
        return QAEnv(TASK, QAToolkit(mapping=mapping, experts={}, prices=sheet,
                                     config=QAToolkitConfig(tools=("answer",))))

    dead = SGLangEngine(f"http://127.0.0.1:{_free_port()}", max_retries=0, request_timeout_s=5,
                        connect_timeout_s=1)
    with FaultServer([("hang",)]) as hung_srv:
        hung = SGLangEngine(hung_srv.url, max_retries=0, request_timeout_s=1.0,
                            abort_timeout_s=0.5)
        trajs = [asyncio.run(run_episode(e, tok, env(), EpisodeConfig(max_turns=2)))
                 for e in (dead, hung)]
    for t in trajs:
        assert t.finish_reason == "error" and t.infra_error and t.num_turns == 0
        assert t.engine == "SGLangEngine" and t.outcome == 0.0
    assert "timeout" in trajs[1].error
    assert list(group_validity(trajs)) == [False, False]
