"""tau2-bench's task evaluator (v0.1.3 semantics) over our dict databases.

Reward of one episode = product of the components in the task's ``reward_basis``
(default ``["DB", "COMMUNICATE"]``):

* ``DB`` — the episode's tool calls are replayed on a fresh DB copy and the task's gold
  ``evaluation_criteria.actions`` on another; 1 iff the SHA-256 of the canonical JSON
  (sorted keys) of both (agent DB and user DB) is equal. With no gold actions *and* no env
  assertions (``None``), tau2 counts DB as matched.
* ``ENV_ASSERTION`` — each ``env_assertions`` entry (a domain assertion function, on the agent
  or the user side) returns its ``assert_value`` (default true) on the replayed episode state.
* ``ACTION`` — every gold action is matched by some episode call (agent's or user's: the
  requestor is not compared, as in tau2) with the same name and equal arguments, restricted to
  the action's ``compare_args`` when given (all the call's arguments otherwise).
* ``COMMUNICATE`` — every ``communicate_info`` string, lower-cased, is a substring of some agent
  message lower-cased with its commas removed (tau2 strips commas from the message only, so an
  info string that contains a comma can never match).
* ``NL_ASSERTION`` — judged by an injectable judge (``nl_judge``); when no judge is given the
  component is skipped (not counted) and a note says so.

Episodes ending with ``termination_reason`` ``max_steps`` / ``too_many_errors`` score 0, as in
tau2. Initial state (``initialization_data`` deep-merged into the agent/user DB,
``initialization_actions`` run as environment functions on their side, ``message_history`` tool
calls replayed) is applied to both copies; calls in the history also count as episode calls and
its assistant texts as messages.

Calls whose ``requestor`` is ``"user"`` run on the user side (telecom's device tools). Domains
with an env sync (telecom) follow tau2's order exactly: the episode replay syncs after every
successful call, after every initialisation action and at the end; the gold replay syncs once
after the initial state and then runs the gold actions without syncing (tau2's
``make_tool_call``); each env assertion is followed by a sync.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import math
from typing import Any, Awaitable, Callable, Mapping, Optional, Sequence, Union

from orchestra_jax.envs.tau2.domain import Domain, load_domain
from orchestra_jax.envs.tau2.toolset import ToolCallResult

__all__ = ["RewardInfo", "canonical_json", "db_hash", "replay", "evaluate", "evaluate_async",
           "evaluate_actions", "pass_hat_k", "DEFAULT_REWARD_BASIS", "REWARD_TYPES",
           "NLJudge", "LLMNLJudge", "apply_initial_state", "run_env_function",
           "execute_call"]

REWARD_TYPES = ("DB", "ENV_ASSERTION", "ACTION", "COMMUNICATE", "NL_ASSERTION")
DEFAULT_REWARD_BASIS = ("DB", "COMMUNICATE")
PREMATURE_TERMINATIONS = ("max_steps", "too_many_errors")

# (assertions, conversation [{"role","content"}], task) -> one bool per assertion
NLJudge = Callable[[list[str], list[dict], dict], Union[Sequence[bool], Awaitable[Sequence[bool]]]]


@dataclasses.dataclass
class RewardInfo:
    """Everything the evaluator found; ``reward`` is in [0, 1]."""

    reward: float
    reward_basis: list[str]
    breakdown: dict[str, float] = dataclasses.field(default_factory=dict)
    db_match: Optional[bool] = None
    gold_db_hash: str = ""
    predicted_db_hash: str = ""
    action_checks: list[dict] = dataclasses.field(default_factory=list)
    communicate_checks: list[dict] = dataclasses.field(default_factory=list)
    env_assertion_checks: list[dict] = dataclasses.field(default_factory=list)
    nl_assertion_checks: list[dict] = dataclasses.field(default_factory=list)
    gold_errors: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def db_hash(db: Any) -> str:
    """SHA-256 hex digest of the canonical JSON of ``db``."""
    return hashlib.sha256(canonical_json(db).encode("utf-8")).hexdigest()


def _deep_merge(target: dict, update: Mapping) -> None:
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(target.get(k), dict):
            _deep_merge(target[k], v)
        else:
            target[k] = json.loads(json.dumps(v))


def _call(domain: Domain, db: dict, user_db: Optional[dict], name: str, arguments: Any,
          requestor: str = "assistant", sync: bool = True) -> ToolCallResult:
    """One tool call on its requestor's side; like tau2's ``get_response`` a successful call
    is followed by the env sync (``sync=False``: tau2's ``make_tool_call``, gold replay), and
    a sync failure turns the observation into an error."""
    if requestor == "user":
        if user_db is None or len(domain.user_tools) == 0:
            return ToolCallResult(name, arguments if isinstance(arguments, dict) else {},
                                  "Error: this domain has no user tools", False,
                                  "this domain has no user tools")
        res = domain.user_tools.execute(user_db, name, arguments)
    else:
        res = domain.tools.execute(db, name, arguments)
    if sync and res.ok and domain.sync is not None:
        try:
            domain.sync_state(db, user_db)
        except Exception as e:  # tau2 reports it as the call's error
            msg = f"{type(e).__name__}: {e}"
            return ToolCallResult(res.name, res.arguments, f"Error: {msg}", False, msg)
    return res


def execute_call(domain: Domain, db: dict, user_db: Optional[dict], name: str, arguments: Any,
                 requestor: str = "assistant") -> ToolCallResult:
    """Run one episode tool call on its requestor's side, followed by the env sync (tau2
    ``Environment.get_response``). Never raises."""
    return _call(domain, db, user_db, name, arguments, requestor, sync=True)


def run_env_function(domain: Domain, db: dict, user_db: Optional[dict], env_type: str,
                     func_name: str, arguments: Mapping) -> Any:
    """tau2 ``run_env_function_call``: an environment function on the ``env_type`` side
    (``"assistant"`` or ``"user"``), then the env sync. Failures raise."""
    if env_type == "user":
        if user_db is None:
            raise ValueError(f"domain {domain.name!r} has no user DB for user function "
                             f"{func_name}")
        result = domain.user_tools.run_function(user_db, func_name, arguments or {})
    elif env_type in ("assistant", None):
        result = domain.tools.run_function(db, func_name, arguments or {})
    else:
        raise ValueError(f"invalid env_type {env_type!r} (expected 'assistant' or 'user')")
    domain.sync_state(db, user_db)
    return result


def _history_calls(message_history: Sequence[Mapping]) -> list[dict]:
    calls = []
    for m in message_history or ():
        for tc in m.get("tool_calls") or ():
            calls.append({"name": tc.get("name"), "arguments": tc.get("arguments") or {},
                          "requestor": "user" if m.get("role") == "user" else "assistant"})
    return calls


def apply_initial_state(domain: Domain, db: dict, user_db: Optional[dict],
                        initial_state: Optional[Mapping]) -> None:
    """Apply a task's ``initial_state`` (data merge + initialization actions + history calls).

    A failing initialization action is a broken task: ``ValueError`` naming it.
    """
    if not initial_state:
        return
    data = initial_state.get("initialization_data") or {}
    if data.get("agent_data"):
        _deep_merge(db, data["agent_data"])
    if data.get("user_data"):
        if user_db is None:
            raise ValueError(f"task sets user_data but domain {domain.name!r} has no user DB")
        _deep_merge(user_db, data["user_data"])
    for act in initial_state.get("initialization_actions") or ():
        try:
            run_env_function(domain, db, user_db, act.get("env_type", "assistant"),
                             act.get("func_name"), act.get("arguments") or {})
        except Exception as e:
            raise ValueError(f"initialization action {act.get('func_name')} failed: "
                             f"{type(e).__name__}: {e}") from None
    for c in _history_calls(initial_state.get("message_history") or ()):
        _call(domain, db, user_db, c["name"], c["arguments"], c["requestor"])
    domain.sync_state(db, user_db)


def _replay(domain: Domain, actions: Sequence[Mapping], initial_state: Optional[Mapping],
            sync_each: bool) -> tuple[dict, Optional[dict], list[ToolCallResult]]:
    db = domain.fresh_db()
    user_db = domain.fresh_user_db()
    apply_initial_state(domain, db, user_db, initial_state)
    results = [_call(domain, db, user_db, a.get("name"), a.get("arguments") or {},
                     a.get("requestor") or "assistant", sync=sync_each) for a in actions]
    if sync_each:
        domain.sync_state(db, user_db)
    return db, user_db, results


def replay(domain: Domain, actions: Sequence[Mapping], *,
           initial_state: Optional[Mapping] = None) -> tuple[dict, Optional[dict],
                                                             list[ToolCallResult]]:
    """Fresh DB (+ user DB) → initial state → ``actions`` in order, as an episode ran them
    (env sync after each successful call). Returns (db, user_db, results)."""
    return _replay(domain, actions, initial_state, sync_each=True)


def _gold_hash(domain: Domain, gold_actions: Sequence[Mapping],
               initial_state: Mapping) -> tuple[str, list[str]]:
    """(hash, errors) of the gold replay, memoised per domain object (the DB never changes)."""
    key = canonical_json([gold_actions, initial_state])
    cache = domain.__dict__.setdefault("_gold_cache", {})
    if key not in cache:
        if len(cache) > 4096:
            cache.clear()
        gold_db, gold_user, results = _replay(domain, gold_actions, initial_state,
                                              sync_each=False)
        cache[key] = (db_hash([gold_db, gold_user]), [f"{r.name}: {r.error}" for r in results
                                                      if not r.ok])
    h, errors = cache[key]
    return h, list(errors)


def _norm(text: str) -> str:
    return text.lower().replace(",", "")


def _action_matches(gold: Mapping, call: Mapping) -> bool:
    """tau2 ``Action.compare_with_tool_call``: name + arguments (``compare_args``), no requestor."""
    if gold.get("name") != call.get("name"):
        return False
    call_args = call.get("arguments") or {}
    compare = gold.get("compare_args")
    keys = list(call_args.keys()) if compare is None else list(compare)
    if not keys:
        return True
    gold_args = gold.get("arguments") or {}
    return ({k: v for k, v in call_args.items() if k in keys}
            == {k: v for k, v in gold_args.items() if k in keys})


def _reward_basis(criteria: Mapping) -> list[str]:
    basis = criteria.get("reward_basis")
    basis = list(DEFAULT_REWARD_BASIS) if basis is None else [str(b).upper() for b in basis]
    unknown = [b for b in basis if b not in REWARD_TYPES]
    if unknown:
        raise ValueError(f"unknown reward_basis entries {unknown}; known: {list(REWARD_TYPES)}")
    return basis


@functools.lru_cache(maxsize=8)
def _cached_domain(name: str) -> Domain:
    return load_domain(name)


def _resolve(domain: Union[Domain, str], task: Union[Mapping, str]) -> tuple[Domain, Mapping]:
    """Accept a domain name/path (loaded once and cached) and a task id as conveniences."""
    if not isinstance(domain, Domain):
        domain = _cached_domain(str(domain))
    if isinstance(task, str):
        task = domain.task(task)
    return domain, task


def _check_episode(task: Any, actions: Any, agent_messages: Any) -> None:
    """Clear TypeErrors for wrongly shaped inputs (instead of AttributeErrors deep inside)."""
    if not isinstance(task, Mapping):
        raise TypeError(f"task must be a tasks.json entry (dict) or a task id, got "
                        f"{type(task).__name__}")
    if isinstance(actions, (str, bytes)) or not isinstance(actions, Sequence):
        raise TypeError(f"actions must be a list of {{'name', 'arguments'}} dicts, got "
                        f"{type(actions).__name__}")
    for i, a in enumerate(actions):
        if not isinstance(a, Mapping) or not isinstance(a.get("name"), str):
            raise TypeError(f"actions[{i}] must be a dict with a string 'name' (and an "
                            f"'arguments' dict), got {a!r:.120}")
    if isinstance(agent_messages, (str, bytes)) or not isinstance(agent_messages, Sequence):
        raise TypeError(f"agent_messages must be a list of strings, got "
                        f"{type(agent_messages).__name__}")


def _evaluate_core(domain: Domain, task: Mapping, actions: Sequence[Mapping],
                   agent_messages: Sequence[str], termination_reason: Optional[str]) -> RewardInfo:
    _check_episode(task, actions, agent_messages)
    criteria = task.get("evaluation_criteria")
    if criteria is None:
        return RewardInfo(1.0, [], notes=["task has no evaluation criteria"])
    basis = _reward_basis(criteria)
    if termination_reason in PREMATURE_TERMINATIONS:
        return RewardInfo(0.0, basis, notes=[f"terminated prematurely: {termination_reason}"])
    initial_state = task.get("initial_state") or {}
    history = initial_state.get("message_history") or []
    all_calls = _history_calls(history) + [
        {"name": a.get("name"), "arguments": a.get("arguments") or {},
         "requestor": a.get("requestor") or "assistant"} for a in actions]
    messages = [m.get("content") or "" for m in history if m.get("role") == "assistant"]
    messages += [m for m in agent_messages if isinstance(m, str)]
    info = RewardInfo(1.0, basis)

    gold_actions = criteria.get("actions")
    env_assertions = criteria.get("env_assertions")
    if {"DB", "ENV_ASSERTION"} & set(basis):
        pred_db, pred_user, _ = replay(domain, actions, initial_state=initial_state)
        if gold_actions is None and env_assertions is None:
            info.db_match = True
            info.notes.append("no gold actions or env assertions: DB counted as matched")
        else:
            info.gold_db_hash, info.gold_errors = _gold_hash(domain, gold_actions or [],
                                                             initial_state)
            info.predicted_db_hash = db_hash([pred_db, pred_user])
            info.db_match = info.gold_db_hash == info.predicted_db_hash
        env_reward = 1.0
        for a in env_assertions or ():
            try:
                result = run_env_function(domain, pred_db, pred_user,
                                          a.get("env_type", "assistant"), a["func_name"],
                                          a.get("arguments") or {})
                if not isinstance(result, bool):
                    raise ValueError(f"{a['func_name']} returned {type(result).__name__}, "
                                     f"not bool")
                expected = a.get("assert_value", True)
                met = result == (True if expected is None else bool(expected))
            except Exception as e:  # an assertion that cannot run is not met
                met = False
                info.notes.append(f"env assertion {a.get('func_name')} failed to run: {e}")
            info.env_assertion_checks.append({"assertion": a, "met": met})
            env_reward *= 1.0 if met else 0.0
        if "DB" in basis:
            info.breakdown["DB"] = 1.0 if info.db_match else 0.0
        if "ENV_ASSERTION" in basis:
            info.breakdown["ENV_ASSERTION"] = env_reward

    if "ACTION" in basis:
        for gold in gold_actions or ():
            matched = any(_action_matches(gold, c) for c in all_calls)
            info.action_checks.append({"action": dict(gold), "matched": matched})
        info.breakdown["ACTION"] = 1.0 if all(c["matched"] for c in info.action_checks) else 0.0

    if "COMMUNICATE" in basis:
        normed = [_norm(m) for m in messages]
        for s in criteria.get("communicate_info") or ():
            met = any(str(s).lower() in m for m in normed)
            info.communicate_checks.append({"info": s, "met": met})
        info.breakdown["COMMUNICATE"] = (
            1.0 if all(c["met"] for c in info.communicate_checks) else 0.0)
    return info


def _premature(info: RewardInfo) -> bool:
    return any(n.startswith("terminated prematurely") for n in info.notes)


def _finish(info: RewardInfo, task: Mapping, verdicts: Optional[Sequence[bool]],
            judged: bool) -> RewardInfo:
    criteria = task.get("evaluation_criteria") or {}
    if "NL_ASSERTION" in info.reward_basis and not _premature(info):
        assertions = list(criteria.get("nl_assertions") or [])
        if not judged:
            info.notes.append("NL_ASSERTION in reward basis but no nl_judge given: skipped")
        elif assertions:
            if verdicts is None or len(verdicts) != len(assertions):
                raise ValueError(f"nl_judge returned {verdicts!r} for {len(assertions)} assertions")
            info.nl_assertion_checks = [{"assertion": a, "met": bool(v)}
                                        for a, v in zip(assertions, verdicts)]
            info.breakdown["NL_ASSERTION"] = 1.0 if all(verdicts) else 0.0
    reward = 1.0
    for v in info.breakdown.values():
        reward *= v
    if _premature(info):
        reward = 0.0
    info.reward = reward
    return info


def _conversation(agent_messages: Sequence[str], conversation: Optional[Sequence[dict]]):
    if conversation is not None:
        return [dict(m) for m in conversation]
    return [{"role": "assistant", "content": m} for m in agent_messages]


def _needs_judge(info: RewardInfo, task: Mapping, nl_judge: Optional[NLJudge]) -> bool:
    criteria = task.get("evaluation_criteria") or {}
    return (nl_judge is not None and "NL_ASSERTION" in info.reward_basis
            and bool(criteria.get("nl_assertions"))
            and not _premature(info))


def evaluate(domain: Union[Domain, str], task: Union[Mapping, str],
             actions: Sequence[Mapping], agent_messages: Sequence[str], *,
             nl_judge: Optional[NLJudge] = None,
             conversation: Optional[Sequence[dict]] = None,
             termination_reason: Optional[str] = None) -> RewardInfo:
    """Score an episode: ``actions`` = executed tool calls ``{"name","arguments"}`` in call
    order, ``agent_messages`` = the agent's texts to the user. ``nl_judge`` must be synchronous
    here (use :func:`evaluate_async` for an async judge). ``domain`` may be a name or path and
    ``task`` a task id."""
    domain, task = _resolve(domain, task)
    info = _evaluate_core(domain, task, actions, agent_messages, termination_reason)
    verdicts = None
    if _needs_judge(info, task, nl_judge):
        verdicts = nl_judge(list(task["evaluation_criteria"]["nl_assertions"]),
                            _conversation(agent_messages, conversation), dict(task))
        if inspect.isawaitable(verdicts):
            if hasattr(verdicts, "close"):
                verdicts.close()
            raise TypeError("nl_judge is async: call evaluate_async instead of evaluate")
    return _finish(info, task, verdicts, nl_judge is not None)


async def evaluate_async(domain: Union[Domain, str], task: Union[Mapping, str],
                         actions: Sequence[Mapping], agent_messages: Sequence[str], *,
                         nl_judge: Optional[NLJudge] = None,
                         conversation: Optional[Sequence[dict]] = None,
                         termination_reason: Optional[str] = None) -> RewardInfo:
    """:func:`evaluate` with a sync or async ``nl_judge``."""
    domain, task = _resolve(domain, task)
    info = _evaluate_core(domain, task, actions, agent_messages, termination_reason)
    verdicts = None
    if _needs_judge(info, task, nl_judge):
        verdicts = nl_judge(list(task["evaluation_criteria"]["nl_assertions"]),
                            _conversation(agent_messages, conversation), dict(task))
        if inspect.isawaitable(verdicts):
            verdicts = await verdicts
    return _finish(info, task, verdicts, nl_judge is not None)


def evaluate_actions(domain: Union[Domain, str], task: Union[Mapping, str],
                     actions: Sequence[Mapping], agent_messages: Sequence[str],
                     **kwargs: Any) -> float:
    """The episode reward in [0, 1] (see :func:`evaluate`)."""
    return evaluate(domain, task, actions, agent_messages, **kwargs).reward


def pass_hat_k(rewards_per_task_trials: Union[Mapping[Any, Sequence[float]],
                                              Sequence[Sequence[float]]], k: int) -> float:
    """tau2's pass^k: mean over tasks of C(c, k) / C(n, k), with n trials and c successes
    (reward within 1e-6 of 1). Every task needs at least ``k`` trials."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    groups = (list(rewards_per_task_trials.values()) if isinstance(rewards_per_task_trials, Mapping)
              else list(rewards_per_task_trials))
    if not groups:
        raise ValueError("no tasks given")
    total = 0.0
    for trials in groups:
        n = len(trials)
        if n < k:
            raise ValueError(f"a task has {n} trials < k={k}")
        c = sum(1 for r in trials if abs(float(r) - 1.0) <= 1e-6)
        total += math.comb(c, k) / math.comb(n, k)
    return total / len(groups)


_JUDGE_SYSTEM = """TASK
- You will be given a list of expected outcomes and a conversation that was collected during a test case run.
- The conversation is between an agent and a customer.
- Your job is to evaluate whether the agent satisfies each of the expected outcomes.
- Grade each expected outcome individually.

FORMAT
- Your response should be a JSON object with the following fields:
- `reasoning`: a short explanation for your classification
- `metExpectation`: `true` if the agent satisfies the expected outcomes, `false` otherwise
- `expectedOutcome`: repeat the expectation from the input that you are grading

Example response structure:
{
    "results": [
        {
            "expectedOutcome": "<one of the expected outcomes from the input>",
            "reasoning": "<reasoning trace>",
            "metExpectation": <false or true>
        }
    ]
}"""


class LLMNLJudge:
    """tau2's NL-assertion judge prompt over any ChatModel-like ``async chat(messages, ...)``.

    Unparsable judge output counts every assertion as not met (and is kept in ``last_raw``).
    """

    def __init__(self, chat_model: Any, *, max_tokens: int = 2048, temperature: float = 0.0):
        self.chat_model = chat_model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.last_raw = ""

    async def __call__(self, assertions: list[str], conversation: list[dict],
                       task: dict) -> list[bool]:
        convo = "\n".join(f"{m.get('role')}: {m.get('content')}" for m in conversation)
        user = f"conversation:\n{convo}\n\nexpectedOutcomes:\n{assertions}"
        resp = await self.chat_model.chat(
            [{"role": "system", "content": _JUDGE_SYSTEM}, {"role": "user", "content": user}],
            max_tokens=self.max_tokens, temperature=self.temperature)
        self.last_raw = getattr(resp, "text", None) or ""
        text = self.last_raw
        try:
            start, end = text.index("{"), text.rindex("}") + 1
            results = json.loads(text[start:end])["results"]
            verdicts = [bool(r.get("metExpectation")) for r in results]
        except (ValueError, KeyError, TypeError, AttributeError):
            return [False] * len(assertions)
        if len(verdicts) != len(assertions):
            return [False] * len(assertions)
        return verdicts
