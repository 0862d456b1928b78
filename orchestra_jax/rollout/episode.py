"""One episode: render -> engine.generate -> parse -> env.step -> append observation -> ...

The loop only talks to the :class:`~orchestra_jax.rollout.engine.Engine` protocol (token ids in,
token ids + log-probs out) and to an :class:`EpisodeEnv` (QA: ``orchestra_jax.envs.qa.QAEnv``;
tau2: :class:`orchestra_jax.rollout.tau2_adapter.Tau2EpisodeEnv`). Token bookkeeping is done by
:class:`orchestra_jax.chat.assembly.TokenAssembler` (policy tokens verbatim, mask 1; env tokens
rendered by the chat template, mask 0).

Per turn: the prompt is the whole sequence so far; the policy generates at most
``min(max_new_tokens_per_turn, room left)`` tokens; its text is parsed (format errors become an
observation, never an exception); valid calls go to the environment; observations (and, in tau2,
the user's reply) are appended as the next user turn(s). The episode ends when the env says so
(``"done"``: ``answer`` called, user stopped), at ``max_turns`` (paper: 50), when the context is
full (``"context"``), when a per-turn or per-episode time limit passes (``"timeout"``), or on an
engine/env exception (``"error"``, recorded in the trajectory, not raised).

Costs: every turn charges the policy's own tokens (``prompt_tokens·p_in + completion·p_out``,
paper §3.2; the release charged Qwen3-8B prices) plus the env's tool costs. ``latency_s`` is the
sum of tool wall-clock time (the release's definition); ``gen_latency_s`` holds the policy's own
generation time so both can be reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Optional, Sequence

from orchestra_jax.chat.assembly import ContextLimits, TokenAssembler
from orchestra_jax.chat.parser import ToolSchemas, parse_tool_calls
from orchestra_jax.envs.base import EnvOutcome, EnvStart, EnvStep, EpisodeEnv
from orchestra_jax.rollout.engine import Engine, SamplingParams
from orchestra_jax.rollout.trajectory import Trajectory, TurnRecord


@dataclasses.dataclass(frozen=True)
class EpisodeConfig:
    """Episode settings (paper §4.2/§4.3 defaults: 50 turns, 24k prompt, 8k per turn, temp 1.0).

    observation_role: ``"user"`` (paper) or ``"tool"`` (Qwen3 ``<tool_response>``).
    turn_timeout_s / episode_timeout_s: wall-clock seconds (None = unlimited).
    policy_usd_per_1m_input_tokens / output: the orchestrator's own token price (Qwen3-8B in
    the paper's price table: $0.2 / $0.2 per 1M tokens).
    """

    max_turns: int = 50
    limits: ContextLimits = ContextLimits()
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    enable_thinking: Optional[bool] = None
    observation_role: str = "user"
    turn_timeout_s: Optional[float] = 600.0
    episode_timeout_s: Optional[float] = 3600.0
    policy_usd_per_1m_input_tokens: float = 0.2
    policy_usd_per_1m_output_tokens: float = 0.2
    stop_tokens: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>")
    seed: Optional[int] = None

    def __post_init__(self):
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.observation_role not in ("user", "tool"):
            raise ValueError(f"observation_role must be 'user' or 'tool', got "
                             f"{self.observation_role!r}")
        for name in ("turn_timeout_s", "episode_timeout_s"):
            v = getattr(self, name)
            if v is not None and not v > 0:   # 0 would silently mean "no limit"
                raise ValueError(f"{name} must be > 0 seconds or None (no limit), got {v!r}")
        for name in ("temperature", "policy_usd_per_1m_input_tokens",
                     "policy_usd_per_1m_output_tokens"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not isinstance(self.limits, ContextLimits):
            raise TypeError(f"limits must be a ContextLimits, got {type(self.limits).__name__}")


def _stop_ids(tokenizer, names: Sequence[str]) -> tuple[int, ...]:
    ids = []
    for n in names:
        i = tokenizer.convert_tokens_to_ids(n)
        if i is not None and i != getattr(tokenizer, "unk_token_id", None):
            ids.append(int(i))
    return tuple(ids)


def _env_messages(step: EnvStep, errors_obs: Optional[str], role: str) -> list[dict]:
    obs = ([errors_obs] if errors_obs else []) + list(step.observations)
    msgs: list[dict] = []
    if obs:
        if role == "tool":
            msgs.extend({"role": "tool", "content": o} for o in obs)
        else:
            msgs.append({"role": "user", "content": "\n\n".join(obs)})
    if step.user_message is not None:
        msgs.append({"role": "user", "content": step.user_message})
    return msgs


async def _timed(coro, timeout: Optional[float]):
    return await (asyncio.wait_for(coro, timeout) if timeout else coro)


def _time_left(config: EpisodeConfig, deadline: Optional[float]) -> Optional[float]:
    """Seconds the next engine/env call may take: min(per-turn limit, episode time left)."""
    limits = [config.turn_timeout_s] if config.turn_timeout_s else []
    if deadline is not None:
        limits.append(deadline - time.perf_counter())
    return min(limits) if limits else None


async def run_episode(engine: Engine, tokenizer, env: EpisodeEnv,
                      config: EpisodeConfig = EpisodeConfig()) -> Trajectory:
    """Runs one episode to the end and returns its :class:`Trajectory`. Never raises for
    engine/env/tool failures: they end the episode with ``finish_reason="error"`` (or
    ``"timeout"``) and the message in ``Trajectory.error``."""
    t_start = time.perf_counter()
    deadline = t_start + config.episode_timeout_s if config.episode_timeout_s else None
    traj = Trajectory(task_id=str(getattr(env, "task_id", "")),
                      tool_names=list(getattr(env, "tool_names", [])))
    counts = {n: 0 for n in traj.tool_names}
    stop_ids = _stop_ids(tokenizer, config.stop_tokens)
    asm: Optional[TokenAssembler] = None
    finish = "max_turns"
    try:
        start = await _timed(env.reset(), config.turn_timeout_s)
        schemas = ToolSchemas.of(start.schemas if start.schemas is not None else start.tools)
        asm = TokenAssembler(tokenizer, tools=start.tools, enable_thinking=config.enable_thinking,
                             observation_role=config.observation_role, limits=config.limits)
        asm.start(start.messages)
        for turn_idx in range(config.max_turns):
            budget = asm.next_turn_budget()
            if budget <= 0:
                finish = "context"
                break
            timeout = _time_left(config, deadline)
            if timeout is not None and timeout <= 0:
                finish = "timeout"
                traj.error = f"turn {turn_idx}: episode time limit reached"
                break
            sampling = SamplingParams(
                max_new_tokens=budget, temperature=config.temperature, top_p=config.top_p,
                top_k=config.top_k, stop_token_ids=stop_ids,
                seed=None if config.seed is None else config.seed + turn_idx)
            prompt_len = len(asm)
            t0 = time.perf_counter()
            try:
                (out,) = await _timed(engine.generate([list(asm.tokens)], sampling), timeout)
            except asyncio.TimeoutError:
                finish = "timeout"
                traj.error = f"turn {turn_idx}: generation exceeded {timeout:.1f} s"
                break
            gen_s = time.perf_counter() - t0
            if out.finish_reason == "error" and not out.token_ids:
                raise RuntimeError(f"engine error: {out.error}")
            if not out.token_ids:
                raise RuntimeError("engine returned no tokens")
            prompt_span = [asm.prompt_spans[-1].start, asm.prompt_spans[-1].end]
            span = asm.add_policy_turn(out.token_ids, out.logprobs)
            text = asm.messages[-1]["content"]
            parsed = parse_tool_calls(text, schemas, allow_message=start.allow_message)
            rec = TurnRecord(
                index=turn_idx, prompt_span=prompt_span, response_span=[span.start, span.end],
                text=text, thinking=parsed.thinking, calls=parsed.calls, message=parsed.message,
                format_ok=parsed.format_ok, errors=list(parsed.errors),
                repeated_tools=list(parsed.repeated_tools), finish_reason=out.finish_reason,
                gen_latency_s=gen_s, prompt_tokens=prompt_len,
                completion_tokens=len(out.token_ids))
            rec.cost_usd = (prompt_len * config.policy_usd_per_1m_input_tokens +
                            len(out.token_ids) * config.policy_usd_per_1m_output_tokens) / 1e6
            traj.turns.append(rec)
            traj.gen_latency_s += gen_s
            if out.finish_reason == "error":
                raise RuntimeError(f"engine error mid-turn: {out.error}")

            t1 = time.perf_counter()
            timeout = _time_left(config, deadline)
            try:
                step = await _timed(env.step(parsed), timeout)
            except asyncio.TimeoutError:
                finish = "timeout"
                traj.error = f"turn {turn_idx}: environment step exceeded {timeout:.1f} s"
                break
            rec.tool_latency_s = step.latency_s or (time.perf_counter() - t1)
            rec.cost_usd += step.cost_usd
            rec.tool_results = list(step.tool_results)
            for k in step.tool_keys:
                counts[k] = counts.get(k, 0) + 1
            msgs = _env_messages(step, parsed.error_observation() if parsed.errors else None,
                                 config.observation_role)
            rec.observations = [m["content"] for m in msgs]
            if step.done:
                finish = "done"
                break
            if not msgs:
                msgs = [{"role": "user", "content": "No observation. Call a tool."}]
                rec.observations = [msgs[0]["content"]]
            if turn_idx + 1 < config.max_turns:
                asm.add_messages(msgs)
    except Exception as e:  # noqa: BLE001 - one broken episode must not kill the batch
        finish = "error"
        traj.error = f"{type(e).__name__}: {e}"
    traj.finish_reason = finish
    traj.num_turns = len(traj.turns)
    traj.format_ok_all = bool(traj.turns) and all(t.format_ok for t in traj.turns)
    traj.cost_usd = sum(t.cost_usd for t in traj.turns)
    traj.latency_s = sum(t.tool_latency_s for t in traj.turns)
    if asm is not None:
        traj.tokens, traj.loss_mask, traj.rollout_logprobs = asm.tokens, asm.loss_mask, asm.logprobs
        traj.info["messages"] = asm.messages
    extra = [k for k in counts if k not in traj.tool_names]
    traj.tool_names = traj.tool_names + extra
    traj.tool_counts = [counts[k] for k in traj.tool_names]
    try:
        outcome = await _timed(env.finish(finish), config.turn_timeout_s)
        traj.outcome = traj.reward = float(outcome.reward)
        traj.correct = bool(outcome.correct)
        traj.answer, traj.answer_valid = outcome.answer, bool(outcome.answer_valid)
        traj.info.update(outcome.info)
    except Exception as e:  # noqa: BLE001
        traj.error = (traj.error + "; " if traj.error else "") + \
            f"finish failed: {type(e).__name__}: {e}"
    traj.wall_s = time.perf_counter() - t_start
    return traj


__all__ = ["EpisodeConfig", "run_episode", "EpisodeEnv", "EnvStart", "EnvStep", "EnvOutcome"]
