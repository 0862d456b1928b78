"""Evaluation runner: one benchmark × one method × toolset × price sheet (× preference set) →
``OUT/records.jsonl`` (+ ``trajectories.jsonl`` for the viewer, ``run.json``, ``summary.json``).

Resumable: examples are keyed by (task id, trial); a re-run into the same directory skips every
key that already has a record and appends the rest, so an interrupted run (even ``kill -9``)
continues without redoing or duplicating examples. Up to ``concurrency`` episodes are in flight
(asyncio; the local engine batches their generate calls); a tqdm bar counts done / total; one
failing example becomes a record with ``finish_reason="error"`` and ``infra_error`` set, never an
aborted run. tau2 runs report pass^k for every k ≤ ``num_trials`` (tau2's estimator).

Methods (paper §4.2, Table 1 rows): ``orchestrator`` (a trained checkpoint over the full toolset),
``llm_orchestrator`` (a prompted LLM over the same full toolset; same mechanics, another label),
``basic_tools`` (QA: search / code interpreter / answer with every alias served by the evaluated
model itself, the release's ``eval_hle_basic``; tau2: the domain functions only), ``no_tool``
(QA: only ``answer``, answered by the evaluated model itself; τ² cannot be run without tools).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import time
from typing import Any, Optional

from orchestra_jax.chat.assembly import ContextLimits
from orchestra_jax.eval import benchmarks as bm
from orchestra_jax.eval.methods import LocalModel, ModelPool, build_policy_engine
from orchestra_jax.eval.records import (RecordStore, RunContext, compact_trajectory, load_records,
                                        record_from_trajectory, record_key)
from orchestra_jax.rollout.episode import EpisodeConfig, run_episode
from orchestra_jax.rollout.trajectory import Trajectory
from orchestra_jax.tools.aliases import ALL_ALIASES, ModelMapping
from orchestra_jax.tools.pricing import PriceSheet, pricing_dir

METHODS = {"orchestrator": "full", "llm_orchestrator": "full", "basic_tools": "basic",
           "no_tool": "none"}


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """Everything one evaluation run needs (units in names; defaults tagged in configs/eval_*.py).

    benchmark: tau2 | toolscale | frames | hle | generalthought; domain: tau2/ToolScale domain
    name or directory; tasks: task file ("" = the domain's tasks.json / the shared FRAMES file).
    policy: HF checkpoint dir, training workdir or ``preset:<name>``; engine: local | sglang.
    expert_specs: JSON ``{model: ExpertConfig fields}`` of OpenAI-compatible endpoints ("" = every
    tool model served by the local ``local_experts`` model). user_model / judge: ``policy``, a
    checkpoint path, or a name in expert_specs (judge ``none`` = exact match only).
    """

    benchmark: str
    out: str
    domain: str = ""
    tasks: str = ""
    limit: Optional[int] = None
    num_trials: int = 1
    method: str = "orchestrator"
    model_label: str = "ours"
    policy: str = "preset:tiny-hd128"
    engine: str = "local"
    sglang_urls: str = ""
    max_context: int = 32768
    seed: int = 0
    tool_config: str = "paper_eval"
    prices: str = "paper_eval"
    policy_price_model: str = "Qwen/Qwen3-8B"
    expert_specs: str = ""
    local_experts: str = "policy"
    local_expert_max_new_tokens: Optional[int] = None
    user_model: str = "policy"
    user_price_model: str = "gpt-5"
    user_max_new_tokens: int = 1024
    judge: str = "policy"
    judge_max_new_tokens: int = 64
    index_dir: str = ""
    corpus: str = ""
    search_backend: str = "local"
    top_k_docs: int = 5
    search_once: bool = False
    answer_requires_documents: bool = False
    allow_unisolated_sandbox: bool = False
    preference_set: str = ""
    max_turns: int = 50
    max_prompt_tokens: int = 24_000
    max_new_tokens_per_turn: int = 8_000
    temperature: float = 0.0
    top_p: float = 1.0
    observation_role: str = "user"
    turn_timeout_s: Optional[float] = 600.0
    episode_timeout_s: Optional[float] = 3600.0
    tau2_max_steps: int = 200
    tau2_max_errors: int = 10
    concurrency: int = 4
    progress: bool = True

    def __post_init__(self):
        bm.benchmark_name(self.benchmark, self.domain)
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; methods: {sorted(METHODS)}")
        if self.method == "no_tool" and self.benchmark in bm.FC_BENCHMARKS:
            raise ValueError("no_tool cannot run tau2/ToolScale tasks (paper Table 1: τ²-Bench "
                             "cannot be solved without tools)")
        if self.tool_config not in ("paper_eval", "unseen"):
            raise ValueError(f"tool_config must be paper_eval | unseen, got {self.tool_config!r}")
        if self.num_trials < 1 or self.concurrency < 1:
            raise ValueError("num_trials and concurrency must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit}")
        if not self.out:
            raise ValueError("out (the run directory) is required")

    @property
    def toolset(self) -> str:
        return METHODS[self.method]

    @classmethod
    def from_mapping(cls, d: Any) -> "EvalSpec":
        """From an ml_collections ConfigDict / dict (unknown keys are an error; 0 limit = None)."""
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown evaluation settings {unknown}; known: {sorted(names)}")
        if not d.get("limit"):
            d["limit"] = None
        for k in ("local_expert_max_new_tokens", "turn_timeout_s", "episode_timeout_s"):
            if k in d and not d[k]:
                d[k] = None
        return cls(**d)


def _prices(name: str) -> PriceSheet:
    p = pathlib.Path(name)
    return PriceSheet.load(p if p.suffix == ".json" else pricing_dir() / f"{name}.json")


class Evaluation:
    """Builds the method's parts once and runs every pending (task, trial)."""

    def __init__(self, spec: EvalSpec, *, policy_engine: Any = None):
        """``policy_engine``: an Engine that replaces the policy's own (e.g. a scripted engine
        in tests/demos); the tokenizer and local experts still come from ``spec.policy``."""
        self.spec = spec
        self._engine_override = policy_engine
        self.benchmark = bm.benchmark_name(spec.benchmark, spec.domain)
        self.prices = _prices(spec.prices)
        self.is_fc = spec.benchmark in bm.FC_BENCHMARKS
        self.domain = None
        if self.is_fc:
            from orchestra_jax.envs.tau2 import load_domain
            self.domain = load_domain(spec.domain)
            self.domain.require_tools()
        tasks_file = spec.tasks or str(bm.default_task_file(
            spec.benchmark, self.domain.path if self.domain else None))
        self.tasks_file = tasks_file
        self.tasks = (bm.load_fc_tasks(tasks_file, spec.limit) if self.is_fc
                      else bm.load_qa_tasks(tasks_file, spec.limit))
        if not self.tasks:
            raise ValueError(f"no tasks in {tasks_file}")
        self.preferences = bm.load_preferences(spec.preference_set) if spec.preference_set else None
        self.mapping = self._mapping()
        self._built = False

    def _mapping(self) -> ModelMapping:
        s = self.spec
        if s.toolset == "full":
            return ModelMapping.paper_eval() if s.tool_config == "paper_eval" \
                else ModelMapping.unseen()
        # basic / none: every alias is the evaluated model itself (release eval_hle_basic)
        return ModelMapping({a: s.policy_price_model for a in ALL_ALIASES}, name="self")

    def run_info(self) -> dict:
        s = self.spec
        return {"benchmark": self.benchmark, "domain": s.domain, "method": s.method,
                "model_label": s.model_label, "toolset": s.toolset, "tool_config": s.tool_config,
                "prices": self.prices.name, "policy": s.policy, "preference_set": s.preference_set,
                "tasks": str(self.tasks_file), "spec": dataclasses.asdict(s)}

    # ---------------------------------------------------------------- parts
    def build(self) -> None:
        if self._built:
            return
        s = self.spec
        self.policy_local = LocalModel(s.policy, max_context=s.max_context, seed=s.seed) \
            if s.engine == "local" else None
        self.engine, self.tokenizer, self.engine_desc = build_policy_engine(s, self.policy_local)
        if self._engine_override is not None:
            self.engine = self._engine_override
            self.engine_desc = type(self._engine_override).__name__
        self.pool = ModelPool(s, self.policy_local, self.prices)
        models = self.mapping.models()
        self.experts = self.pool.experts_for(models, default_ref=s.local_experts) \
            if s.toolset != "none" or not self.is_fc else {}
        self.user = None
        if self.is_fc:
            from orchestra_jax.envs.user_sim import LLMUserSimulator
            self.user_chat = self.pool.chat(s.user_model, name=s.user_price_model,
                                            max_new_tokens=s.user_max_new_tokens, seed=s.seed)
        self.judge = None if s.judge == "none" else self.pool.chat(
            s.judge, name="judge", max_new_tokens=s.judge_max_new_tokens, seed=s.seed)
        self.index = None
        if not self.is_fc and s.toolset != "none" and s.search_backend != "web":
            from orchestra_jax.tools.retrieval import BUNDLED_CORPUS, LocalSearchIndex
            self.index = LocalSearchIndex.load(s.index_dir) if s.index_dir else \
                LocalSearchIndex.build(s.corpus or BUNDLED_CORPUS)
        self.web = None
        if not self.is_fc and s.search_backend != "local" and s.toolset != "none":
            from orchestra_jax.tools.web_search import TavilyClient
            self.web = TavilyClient()
        pin = self.prices.price(s.policy_price_model) if self.prices.has(s.policy_price_model) \
            else None
        self.episode = EpisodeConfig(
            max_turns=s.max_turns, temperature=s.temperature, top_p=s.top_p,
            observation_role=s.observation_role, seed=s.seed, turn_timeout_s=s.turn_timeout_s,
            episode_timeout_s=s.episode_timeout_s,
            limits=ContextLimits(max_prompt_tokens=s.max_prompt_tokens,
                                 max_new_tokens_per_turn=s.max_new_tokens_per_turn),
            policy_usd_per_1m_input_tokens=pin.usd_per_1m_input_tokens if pin else 0.0,
            policy_usd_per_1m_output_tokens=pin.usd_per_1m_output_tokens if pin else 0.0)
        self.context = RunContext(
            benchmark=self.benchmark, domain=s.domain, method=s.method, model_label=s.model_label,
            toolset=s.toolset, tool_config=s.tool_config, prices=self.prices.name,
            policy=s.policy, engine=self.engine_desc,
            policy_version=getattr(self.engine, "version", None),
            mapping=dict(self.mapping.aliases),
            sampling={"temperature": s.temperature, "top_p": s.top_p, "max_turns": s.max_turns,
                      "max_prompt_tokens": s.max_prompt_tokens,
                      "max_new_tokens_per_turn": s.max_new_tokens_per_turn, "seed": s.seed})
        self._built = True

    def make_env(self, task: dict, trial: int):
        s = self.spec
        if self.is_fc:
            from orchestra_jax.envs.tau2.env import FunctionCallingEnv
            from orchestra_jax.envs.tau2.evaluator import LLMNLJudge
            from orchestra_jax.envs.user_sim import LLMUserSimulator
            from orchestra_jax.rollout.tau2_adapter import Tau2EpisodeEnv
            experts = None
            if s.toolset == "full":
                experts = {a: self.experts[self.mapping.model_of(a)]
                           for a in self.mapping.available("expert")}
            user = LLMUserSimulator(self.user_chat, max_tokens=s.user_max_new_tokens,
                                    prices=self.prices, price_model=s.user_price_model)
            env = FunctionCallingEnv(
                self.domain, task, user, experts, mapping=self.mapping, prices=self.prices,
                max_steps=s.tau2_max_steps, max_errors=s.tau2_max_errors,
                nl_judge=LLMNLJudge(self.judge) if self.judge is not None else None)
            env = Tau2EpisodeEnv(env, task_id=str(task["id"]))
            where = "system"
        else:
            from orchestra_jax.envs.qa import QAEnv
            from orchestra_jax.tools.meta_tools import QAToolkit, QAToolkitConfig
            tools = ("answer",) if s.toolset == "none" else ("search", "enhance_reasoning",
                                                             "answer")
            cfg = QAToolkitConfig(tools=tools, search_backend=s.search_backend,
                                  top_k_docs=s.top_k_docs, search_once=s.search_once,
                                  answer_requires_documents=s.answer_requires_documents,
                                  allow_unisolated_sandbox=s.allow_unisolated_sandbox)
            tk = QAToolkit(mapping=self.mapping, experts=self.experts, prices=self.prices,
                           index=self.index, web=self.web, config=cfg)
            env = QAEnv(task, tk, judge=self.judge)
            where = "user"
        pref = None
        if self.preferences is not None:
            pair = bm.assign_preference(str(task["id"]), self.preferences)
            pref = pair.record(env.tool_names)
            env = bm.PreferenceEnv(env, pair.instruction, where=where)
        return env, pref

    # ---------------------------------------------------------------- run
    def pending(self, done: set) -> list[tuple[dict, int]]:
        return [(t, k) for t in self.tasks for k in range(self.spec.num_trials)
                if record_key(t["id"], k) not in done]

    async def _one(self, task: dict, trial: int, store: RecordStore) -> dict:
        pref = None
        t0 = time.perf_counter()
        try:
            env, pref = self.make_env(task, trial)
            cfg = self.episode if self.episode.seed is None else dataclasses.replace(
                self.episode, seed=self.episode.seed + 1009 * trial)
            traj = await run_episode(self.engine, self.tokenizer, env, cfg)
        except Exception as e:  # noqa: BLE001 - a broken example is a record, not a crash
            traj = Trajectory(task_id=str(task["id"]), finish_reason="error",
                              error=f"{type(e).__name__}: {e}", wall_s=time.perf_counter() - t0)
        rec = record_from_trajectory(traj, self.context, trial=trial, preference=pref,
                                     reference=None if self.is_fc else str(task.get("answer")))
        store.write(rec, compact_trajectory(traj, trial=trial, preference=pref))
        return rec

    async def arun(self) -> dict:
        s = self.spec
        store = RecordStore(s.out, self.run_info())
        try:
            todo = self.pending(store.done_keys)
            total = len(self.tasks) * s.num_trials
            if todo:
                self.build()
            bar = None
            if s.progress:
                from tqdm.auto import tqdm
                bar = tqdm(total=total, initial=total - len(todo), desc=self.benchmark)
            sem = asyncio.Semaphore(s.concurrency)

            async def guarded(task, trial):
                async with sem:
                    rec = await self._one(task, trial, store)
                if bar is not None:
                    bar.update(1)
                return rec

            try:
                await asyncio.gather(*(guarded(t, k) for t, k in todo))
            finally:
                if bar is not None:
                    bar.close()
        finally:
            store.close()
        summary = summarize_records(load_records(s.out), s.num_trials)
        summary["resumed_skipped"] = len(self.tasks) * s.num_trials - len(todo)
        (pathlib.Path(s.out) / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary


def evaluate(spec: EvalSpec, *, policy_engine: Any = None) -> dict:
    """Runs (or resumes) the evaluation; returns the summary (also in ``OUT/summary.json``)."""
    return asyncio.run(Evaluation(spec, policy_engine=policy_engine).arun())


def summarize_records(records: list[dict], num_trials: int = 1) -> dict:
    """n, accuracy, mean cost (cents) / latency (minutes), infra errors, and for tau2 pass^k."""
    n = len(records)
    if not n:
        return {"n": 0}
    out = {"n": n,
           "accuracy": sum(bool(r["correct"]) for r in records) / n,
           "mean_cost_cents": 100 * sum(r["cost_usd"] for r in records) / n,
           "mean_latency_min": sum(r["latency_s"] for r in records) / n / 60,
           "infra_errors": sum(r.get("infra_error") is not None for r in records),
           "finish_reasons": {}}
    for r in records:
        out["finish_reasons"][r["finish_reason"]] = out["finish_reasons"].get(
            r["finish_reason"], 0) + 1
    if str(records[0].get("benchmark", "")).startswith(("tau2", "toolscale")):
        from orchestra_jax.envs.tau2 import pass_hat_k
        by_task: dict[str, list[float]] = {}
        for r in records:
            by_task.setdefault(r["task_id"], []).append(float(r["outcome"] or 0.0))
        kmax = min(len(v) for v in by_task.values())
        out["pass_hat_k"] = {str(k): pass_hat_k(by_task, k) for k in range(1, kmax + 1)}
    return out
