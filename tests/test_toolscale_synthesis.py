"""Programmatic ToolScale synthesis: ≥ 20 verified tasks on 3 domains, gold replay 1.0,
perturbations < 1.0, the command-line contract, and an episode in the tau2 env."""

import asyncio
import json
import subprocess
import sys

import pytest

from orchestra_jax.data.toolscale import SynthesisConfig, synthesize
from orchestra_jax.envs.tau2 import DomainError, evaluate, evaluate_actions, load_domain, replay

DOMAINS = ("movie", "medicine", "ecommerce")   # the three smallest DBs (test budget)
REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    root = tmp_path_factory.mktemp("toolscale")
    out = {}
    for d in DOMAINS:
        report = synthesize(SynthesisConfig(domain=d, out=str(root / d), num_tasks=20),
                            log=lambda *_: None)
        out[d] = (load_domain(root / d), report)
    return out


def _gold(task):
    crit = task["evaluation_criteria"]
    return ([{"name": a["name"], "arguments": a["arguments"]} for a in crit["actions"]],
            [f"Sure - {c}." for c in crit["communicate_info"]])


def _alter(domain, action):
    """Change a write's value argument to another allowed value (or perturb a create field)."""
    tool = domain.tools.get(action["name"])
    args = json.loads(json.dumps(action["arguments"]))
    for k, schema in tool.parameters["properties"].items():
        if "enum" in schema and len(schema["enum"]) > 1 and k in args:
            args[k] = next(v for v in schema["enum"] if v != args[k])
            return {"name": action["name"], "arguments": args}
    for k, v in sorted(args.items()):
        if isinstance(v, str) and not k.endswith(("_id", "_ref", "_key")):
            args[k] = v + " x"
            return {"name": action["name"], "arguments": args}
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            args[k] = v + 1
            return {"name": action["name"], "arguments": args}
    raise AssertionError(f"cannot alter {action}")


@pytest.mark.parametrize("name", DOMAINS)
def test_gold_replays_to_one_and_perturbations_below(synthesized, name):
    domain, report = synthesized[name]
    assert len(domain.tasks) >= 20, report["counts"]
    assert 10 <= len(domain.tools) <= 25
    assert len({json.dumps(t["evaluation_criteria"]["actions"], sort_keys=True)
                for t in domain.tasks}) == len(domain.tasks)          # deduplicated
    assert any("_h1" in t["id"] for t in domain.tasks)               # harder variants present
    writes = domain.tools.write_tool_names()
    for task in domain.tasks:
        actions, messages = _gold(task)
        info = evaluate(domain, task, actions, messages)
        assert info.reward == 1.0, (task["id"], info.breakdown, info.gold_errors)
        assert evaluate_actions(domain, task, [], []) < 1.0
        idx = [i for i, a in enumerate(actions) if a["name"] in writes]
        assert idx, task["id"]
        last = idx[-1]
        dropped = actions[:last] + actions[last + 1:]
        assert evaluate_actions(domain, task, dropped, messages) < 1.0, task["id"]
        altered = list(actions)
        altered[last] = _alter(domain, actions[last])
        assert evaluate_actions(domain, task, altered, messages) < 1.0, task["id"]
        if task["evaluation_criteria"]["communicate_info"]:
            assert evaluate_actions(domain, task, actions, ["Done."]) < 1.0


def test_tools_report_errors_as_observations(synthesized):
    domain, _ = synthesized["movie"]
    tools = domain.tools
    get = next(t for t in tools if t.name.startswith("get_"))
    r = tools.execute(domain.fresh_db(), get.name, {k: "NOPE" for k in get.parameters["required"]})
    assert not r.ok and r.observation.startswith("Error:") and "not found" in r.observation
    upd = next(t for t in tools if t.name.startswith("update_"))
    r = tools.execute(domain.fresh_db(), upd.name, {})
    assert not r.ok and "invalid arguments" in r.observation
    find = next(t for t in tools if t.name.startswith("find_"))
    r = tools.execute(domain.fresh_db(), find.name,
                      {k: "no such value" for k in find.parameters["properties"]})
    assert not r.ok and "no " in r.observation


def test_episode_in_tau2_env(synthesized):
    """A scripted agent runs a synthesized task in FunctionCallingEnv and earns reward 1.0."""
    from orchestra_jax.envs.tau2.env import FunctionCallingEnv
    from orchestra_jax.envs.user_sim import ScriptedUser
    domain, _ = synthesized["medicine"]
    task = domain.tasks[0]
    actions, messages = _gold(task)

    async def run():
        env = FunctionCallingEnv(domain, task, ScriptedUser(["Hi, I need a change.", "Yes."]))
        obs = await env.reset()
        assert {t["function"]["name"] for t in obs["tools"]} >= {a["name"] for a in actions}
        for a in actions:
            observations, done, _ = await env.step({"tool_calls": [a]})
            assert not done and not observations[0]["content"].startswith("Error"), observations
        await env.step(" ".join(messages))
        return env.final_reward()
    assert asyncio.run(run()) == 1.0


def test_command_line_contract(tmp_path):
    out = tmp_path / "bank"
    proc = subprocess.run(
        [sys.executable, "experiments/synthesize_toolscale.py",
         "--config=configs/synthesize_toolscale.py", "--config.domain=weather",
         "--config.driver=programmatic", "--config.num_tasks=20", f"--config.out={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    domain = load_domain(out)
    assert len(domain.tasks) == 20 and len(domain.tools) > 0
    assert domain.split["train"] == [t["id"] for t in domain.tasks]
    assert "## Tools" in domain.policy
    task = domain.tasks[0]
    db, _, results = replay(domain, _gold(task)[0])
    assert all(r.ok for r in results)


def test_broken_tools_json_is_a_clear_error(tmp_path, synthesized):
    domain, _ = synthesized["movie"]
    d = tmp_path / "broken"
    d.mkdir()
    for f in ("db.json", "policy.md", "tasks.json"):
        (d / f).write_bytes((domain.path / f).read_bytes())
    spec = json.loads((domain.path / "tools.json").read_text())
    spec[0]["x-op"]["kind"] = "delete_everything"
    (d / "tools.json").write_text(json.dumps(spec))
    with pytest.raises(DomainError, match="x-op.kind must be one of"):
        load_domain(d)
