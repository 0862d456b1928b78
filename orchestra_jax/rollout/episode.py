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
paper §3.2) at ``config.policy_model``'s price in the episode's price sheet (``env.prices``; the
release charged Qwen3-8B), falling back to ``policy_usd_per_1m_*`` when the env has no sheet or
the sheet lacks the model, plus the env's tool costs. ``latency_s`` is the sum of the tool time
the env reports (the release's definition); only when the env reports none
(``EnvStep.latency_s is None``) the wall-clock of ``env.step`` is used, so a tau2 user
simulator's reply time is never counted as tool latency. ``gen_latency_s`` holds the policy's
own generation time.

Run metadata (schema v2): ``meta`` (or ``env.episode_meta``) gives the group id, rollout index,
P and its instruction, the alias→model mapping and the price-sheet id; the engine's name,
log-prob convention (``engine.logprob_convention`` or a per-class default) and weight version
(``engine.policy_version`` / ``engine.version``, read before each turn) are recorded.
Infrastructure failures (engine abort / error / hang, env exception or hang, a failing expert
the env flags, a judge or user simulator that fails) set ``Trajectory.infra_error``: such
episodes are left out of group statistics (``trajectory.group_validity``), never scored as
negative samples.

``strip_thinking=True`` builds each turn's prompt the way Qwen3's chat template re-renders a
history: the conversation so far rendered by the template, which drops the ``<think>`` blocks
of assistant turns before the latest user message. Without it a few thinking turns fill a 24k
prompt. The engine then sees a prompt that is not a prefix of the recorded transcript, so each
turn records its real prompt (``TurnRecord.prompt_base/prompt_suffix``;
``Trajectory.turn_prompt``) and the trajectory requires the ``turn`` training unit.

Plain-text replies: when the env sets ``EnvStart.plain_text_message`` (tau2 without the
``<message>`` instruction, see ``tau2_adapter``), a turn with no tags and non-empty text is the
message to the user, not a format error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, Mapping, Optional, Sequence

from orchestra_jax.chat.assembly import ContextLimits, TokenAssembler
from orchestra_jax.chat.parser import END_MARKERS, ParsedTurn, ToolSchemas, parse_tool_calls
from orchestra_jax.chat.template import encode_text
from orchestra_jax.envs.base import EnvOutcome, EnvStart, EnvStep, EpisodeEnv
from orchestra_jax.rollout.engine import Engine, SamplingParams
from orchestra_jax.rollout.trajectory import Trajectory, TurnRecord


@dataclasses.dataclass(frozen=True)
class EpisodeConfig:
    """Episode settings (paper §4.2/§4.3 defaults: 50 turns, 24k prompt, 8k per turn, temp 1.0).

    observation_role: ``"user"`` (paper) or ``"tool"`` (Qwen3 ``<tool_response>``).
    turn_timeout_s / episode_timeout_s: wall-clock seconds (None = unlimited).
    policy_model: the orchestrator's name in the episode's price sheet ([C] Qwen/Qwen3-8B).
    policy_usd_per_1m_input_tokens / output: fallback price when the env has no price sheet or
    it lacks ``policy_model`` (Qwen3-8B in the paper's table: $0.2 / $0.2 per 1M tokens).
    strip_thinking: prompts re-rendered by the chat template without earlier turns' thinking
    (Qwen3 style; requires the ``turn`` training unit). False = one append-only transcript.
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
    policy_model: str = "Qwen/Qwen3-8B"
    policy_usd_per_1m_input_tokens: float = 0.2
    policy_usd_per_1m_output_tokens: float = 0.2
    stop_tokens: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>")
    seed: Optional[int] = None
    strip_thinking: bool = False

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


# Log-prob convention of engines that do not say (``engine.logprob_convention``): both compute
# the model's own log-softmax whatever the temperature.
_DEFAULT_CONVENTIONS = {"LocalJaxEngine": "pre_temperature", "ScriptedPolicyEngine": "pre_temperature"}
META_KEYS = ("group_id", "rollout_index", "preference", "preference_instruction",
             "preference_kind", "model_mapping", "price_sheet_id")


def engine_info(engine: Any) -> tuple[str, str]:
    """(engine name, log-prob convention) recorded in every trajectory."""
    cls = type(engine).__name__
    name = str(getattr(engine, "name", None) or cls)
    conv = getattr(engine, "logprob_convention", None) or _DEFAULT_CONVENTIONS.get(cls, "unknown")
    return name, str(conv)


def engine_version(engine: Any) -> Optional[int]:
    v = getattr(engine, "policy_version", None)
    if v is None:
        v = getattr(engine, "version", None)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _policy_price(env: Any, config: EpisodeConfig) -> tuple[float, float, str]:
    """($/1M input, $/1M output, where from) of the orchestrator's own tokens."""
    prices = getattr(env, "prices", None)
    if prices is not None and hasattr(prices, "price"):
        try:
            p = prices.price(config.policy_model)
            return (p.usd_per_1m_input_tokens, p.usd_per_1m_output_tokens,
                    f"{getattr(prices, 'name', 'sheet')}:{config.policy_model}")
        except KeyError:
            pass
    return (config.policy_usd_per_1m_input_tokens, config.policy_usd_per_1m_output_tokens,
            "episode_config")


def _apply_meta(traj: Trajectory, env: Any, meta: Optional[Mapping[str, Any]]) -> None:
    merged = dict(getattr(env, "episode_meta", None) or {})
    merged.update(meta or {})
    unknown = sorted(set(merged) - set(META_KEYS))
    if unknown:
        raise ValueError(f"unknown episode meta keys {unknown}; known: {list(META_KEYS)}")
    for k, v in merged.items():
        if v is None:
            continue
        if k == "preference":
            v = [float(x) for x in v]
        elif k == "model_mapping":
            v = dict(v.get("aliases", v)) if isinstance(v, Mapping) else dict(v.to_dict()["aliases"])
        setattr(traj, k, v)
    if not traj.price_sheet_id and getattr(env, "prices", None) is not None:
        traj.price_sheet_id = str(getattr(env.prices, "name", ""))
    if traj.preference is not None and len(traj.preference) != len(traj.tool_names) + 3:
        raise ValueError(f"preference has {len(traj.preference)} entries but the env offers "
                         f"{len(traj.tool_names)} tools ({traj.tool_names}) + 3")


def _as_plain_message(parsed: ParsedTurn) -> ParsedTurn:
    """A tag-less turn with visible text becomes the message (``EnvStart.plain_text_message``)."""
    if parsed.n_blocks or parsed.message is not None or not parsed.content.strip():
        return parsed
    errors = [e for e in parsed.errors if not e.startswith("no tool call found")]
    return dataclasses.replace(parsed, message=parsed.content.strip(), errors=errors,
                               format_ok=not errors)


def _strip_end_markers(text: str) -> str:
    for m in END_MARKERS:
        at = text.find(m)
        if at >= 0:
            text = text[:at]
    return text


def _template_prompt(asm: TokenAssembler, tokenizer) -> list[int]:
    """The conversation so far rendered by the chat template (which drops earlier turns'
    thinking, Qwen3 style) + the generation prompt, as token ids."""
    msgs = [dict(m, content=_strip_end_markers(m["content"]))
            if m.get("role") == "assistant" and isinstance(m.get("content"), str) else dict(m)
            for m in asm.messages]
    return encode_text(tokenizer, asm.template.render(msgs, tools=asm.tools,
                                                      add_generation_prompt=True,
                                                      enable_thinking=asm.enable_thinking))


def _budget(limits: ContextLimits, n: int) -> int:
    """TokenAssembler.next_turn_budget for a prompt of ``n`` tokens."""
    if n > limits.max_prompt_tokens:
        return 0
    budget = limits.max_new_tokens_per_turn
    if limits.max_total_tokens is not None:
        budget = min(budget, limits.max_total_tokens - n)
    return max(budget, 0)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


async def _timed(coro, timeout: Optional[float]):
    return await (asyncio.wait_for(coro, timeout) if timeout else coro)


def _time_left(config: EpisodeConfig, deadline: Optional[float]) -> Optional[float]:
    """Seconds the next engine/env call may take: min(per-turn limit, episode time left)."""
    limits = [config.turn_timeout_s] if config.turn_timeout_s else []
    if deadline is not None:
        limits.append(deadline - time.perf_counter())
    return min(limits) if limits else None


async def run_episode(engine: Engine, tokenizer, env: EpisodeEnv,
                      config: EpisodeConfig = EpisodeConfig(), *,
                      meta: Optional[Mapping[str, Any]] = None) -> Trajectory:
    """Runs one episode to the end and returns its :class:`Trajectory`. Never raises for
    engine/env/tool failures: they end the episode with ``finish_reason="error"`` (or
    ``"timeout"``), the message in ``Trajectory.error`` and ``infra_error`` set.

    meta: run metadata recorded in the trajectory (keys :data:`META_KEYS`), merged over
    ``env.episode_meta``."""
    t_start = time.perf_counter()
    deadline = t_start + config.episode_timeout_s if config.episode_timeout_s else None
    traj = Trajectory(task_id=str(getattr(env, "task_id", "")),
                      tool_names=list(getattr(env, "tool_names", [])))
    traj.engine, traj.logprob_convention = engine_info(engine)
    if config.strip_thinking:
        traj.context_mode, traj.required_unit = "strip_thinking", "turn"
    counts = {n: 0 for n in traj.tool_names}
    alias_counts: dict[str, int] = {}
    stop_ids = _stop_ids(tokenizer, config.stop_tokens)
    traj.sampling = dataclasses.asdict(SamplingParams(
        max_new_tokens=config.limits.max_new_tokens_per_turn, temperature=config.temperature,
        top_p=config.top_p, top_k=config.top_k, stop_token_ids=stop_ids, seed=config.seed))
    p_in, p_out, price_src = _policy_price(env, config)
    traj.info["policy_price"] = {"model": config.policy_model, "usd_per_1m_input_tokens": p_in,
                                 "usd_per_1m_output_tokens": p_out, "source": price_src}
    asm: Optional[TokenAssembler] = None
    finish = "max_turns"
    prev_prompt: Optional[list[int]] = None
    try:
        _apply_meta(traj, env, meta)
        start = await _timed(env.reset(), config.turn_timeout_s)
        schemas = ToolSchemas.of(start.schemas if start.schemas is not None else start.tools)
        asm = TokenAssembler(tokenizer, tools=start.tools, enable_thinking=config.enable_thinking,
                             observation_role=config.observation_role, limits=config.limits)
        asm.start(start.messages)
        if traj.preference_instruction:
            traj.info["preference_in_prompt"] = any(
                traj.preference_instruction in str(m.get("content") or "") for m in start.messages)
        for turn_idx in range(config.max_turns):
            prompt = list(asm.tokens)
            if config.strip_thinking and turn_idx > 0:
                prompt = _template_prompt(asm, tokenizer)
            budget = _budget(config.limits, len(prompt))
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
            version = engine_version(engine)
            t0 = time.perf_counter()
            try:
                (out,) = await _timed(engine.generate([prompt], sampling), timeout)
            except asyncio.TimeoutError:
                finish = "timeout"
                traj.error = f"turn {turn_idx}: generation exceeded {timeout:.1f} s"
                traj.mark_infra(traj.error)
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
            if start.allow_message and start.plain_text_message:
                parsed = _as_plain_message(parsed)
            rec = TurnRecord(
                index=turn_idx, prompt_span=prompt_span, response_span=[span.start, span.end],
                text=text, thinking=parsed.thinking, calls=parsed.calls, message=parsed.message,
                format_ok=parsed.format_ok, errors=list(parsed.errors),
                repeated_tools=list(parsed.repeated_tools), finish_reason=out.finish_reason,
                gen_latency_s=gen_s, prompt_tokens=len(prompt),
                completion_tokens=len(out.token_ids), policy_version=version)
            if config.strip_thinking:
                if prev_prompt is None:
                    prev_prompt = asm.tokens[:span.start]
                if prompt != asm.tokens[:span.start]:
                    rec.prompt_base = _common_prefix(prev_prompt, prompt)
                    rec.prompt_suffix = prompt[rec.prompt_base:]
                prev_prompt = prompt
            rec.cost_usd = (len(prompt) * p_in + len(out.token_ids) * p_out) / 1e6
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
                traj.mark_infra(traj.error)
                break
            env_s = time.perf_counter() - t1
            rec.tool_latency_s = float(step.latency_s) if step.latency_s is not None else env_s
            rec.cost_usd += step.cost_usd
            rec.tool_results = list(step.tool_results)
            if step.infra_error:
                rec.infra_error = step.infra_error
                traj.mark_infra(f"turn {turn_idx}: {step.infra_error}")
            for k in step.tool_keys:
                counts[k] = counts.get(k, 0) + 1
            for a in (step.info or {}).get("aliases", ()):
                alias_counts[a] = alias_counts.get(a, 0) + 1
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
        traj.mark_infra(traj.error)
    traj.finish_reason = finish
    traj.num_turns = len(traj.turns)
    traj.format_ok_all = bool(traj.turns) and all(t.format_ok for t in traj.turns)
    traj.cost_usd = sum(t.cost_usd for t in traj.turns)
    traj.latency_s = sum(t.tool_latency_s for t in traj.turns)
    if asm is not None:
        traj.tokens, traj.loss_mask, traj.rollout_logprobs = asm.tokens, asm.loss_mask, asm.logprobs
        traj.info["messages"] = asm.messages
    extra = [k for k in counts if k not in traj.tool_names]
    if extra:
        traj.info["unlisted_tool_keys"] = extra
        if traj.preference is not None:   # keep P aligned: unlisted tools get weight 0
            traj.preference = traj.preference[:-3] + [0.0] * len(extra) + traj.preference[-3:]
    traj.tool_names = traj.tool_names + extra
    traj.tool_counts = [counts[k] for k in traj.tool_names]
    if alias_counts:
        traj.info["alias_counts"] = alias_counts
    try:
        outcome = await _timed(env.finish(finish), config.turn_timeout_s)
        traj.outcome = traj.reward = float(outcome.reward)
        traj.correct = bool(outcome.correct)
        traj.answer, traj.answer_valid = outcome.answer, bool(outcome.answer_valid)
        traj.info.update(outcome.info)
        if outcome.infra_error:
            traj.mark_infra(outcome.infra_error)
    except Exception as e:  # noqa: BLE001
        msg = f"finish failed: {type(e).__name__}: {e}"
        traj.error = (traj.error + "; " if traj.error else "") + msg
        traj.mark_infra(msg)
    traj.wall_s = time.perf_counter() - t_start
    return traj


__all__ = ["EpisodeConfig", "run_episode", "engine_info", "engine_version", "META_KEYS",
           "EpisodeEnv", "EnvStart", "EnvStep", "EnvOutcome"]
