"""ToolScale synthesis pipeline (paper §3.3 / App. I, paper_spec §5.1): one pipeline, two drivers.

    database (schema → entries → validation) → tools → intents → tasks → harder variants
      → filters (gold executes, changes the DB, scores 1.0; doing nothing does not) → dedup
      → domain folder (db.json, policy.md, tools.json, tasks.json, split_tasks.json, report)

A *driver* supplies the generative stages; the pipeline owns validation, filtering, dedup and
writing, so both drivers' tasks pass the same checks:

* :class:`ProgrammaticDriver` — no model: the seed DB's inferred schema, tools derived from it
  (:mod:`.tools`), intents sampled from valid entries and composed into tasks (:mod:`.compose`).
* :class:`~orchestra_jax.data.toolscale.llm_driver.LLMDriver` — any OpenAI-compatible chat
  model with the paper's prompt sequence, every output JSON-schema-validated, resumable.

The written folder loads with ``orchestra_jax.envs.tau2.load_domain(out)`` (its ``tools.json``
is executed by :mod:`orchestra_jax.envs.tau2.spec_tools`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import random
import time
from typing import Any, Optional, Protocol

from orchestra_jax.data.toolscale.compose import Composer, render_task
from orchestra_jax.data.toolscale.filters import check_task, dedup, replay_new_ids
from orchestra_jax.data.toolscale.schema import (CollectionInfo, ValidationReport,
                                                 infer_collections, validate_entries)
from orchestra_jax.data.toolscale.tools import MAX_TOOLS, derive_tools
from orchestra_jax.envs.tau2 import Domain, DomainError, load_domain
from orchestra_jax.envs.tau2.spec_tools import toolset_from_spec

__all__ = ["SynthesisConfig", "SynthesisContext", "Driver", "ProgrammaticDriver", "synthesize",
           "write_domain", "domain_policy"]


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
    """What to synthesize. ``source`` = seed domain (name under the ToolScale data root or a
    directory with db.json + policy.md); ``out`` = the domain folder to write."""

    domain: str
    out: str
    driver: str = "programmatic"         # "programmatic" | "llm"
    source: str = ""                     # default: the domain name itself
    num_tasks: int = 20
    seed: int = 0
    oversample: int = 2                  # [ours] candidates tried per requested task
    evolve_fraction: float = 0.5         # [ours] share of tasks made harder (Table 13)
    evolve_rounds: int = 1               # [P] Fig. 4 "× n"; n not given
    max_tools: int = MAX_TOOLS           # [P] Table 5: 14–25 tools
    # LLM driver
    base_url: str = ""
    model: str = ""
    api_key_env: str = ""
    temperature: float = 1.0
    max_tokens: int = 1024
    max_retries: int = 2                 # re-asks after an invalid output, then dropped
    timeout_s: float = 120.0
    llm_num_intents: int = 8
    llm_validate_sample: int = 8         # [ours] entries the LLM validator checks (Table 9)
    llm_tools_fallback: bool = True      # no valid LLM tools → schema-derived tools


@dataclasses.dataclass
class SynthesisContext:
    """State passed between stages; ``counts`` records everything produced/dropped and why."""

    config: SynthesisConfig
    name: str
    source_dir: Optional[pathlib.Path]
    policy: str = ""
    db: dict = dataclasses.field(default_factory=dict)
    infos: list = dataclasses.field(default_factory=list)
    report: Optional[ValidationReport] = None
    spec: list = dataclasses.field(default_factory=list)
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    drops: list = dataclasses.field(default_factory=list)
    rng: random.Random = dataclasses.field(default_factory=random.Random)

    def drop(self, stage: str, reason: str) -> None:
        self.counts[f"{stage}.dropped"] += 1
        if len(self.drops) < 200:
            self.drops.append({"stage": stage, "reason": reason[:300]})

    def domain(self) -> Domain:
        """The domain being built (cached per tools spec: its pristine-DB copy is reused)."""
        key = json.dumps(self.spec, sort_keys=True)
        if getattr(self, "_domain_key", None) != key:
            self._domain = Domain(name=self.name, path=pathlib.Path(self.config.out), db=self.db,
                                  policy=self.policy, tasks=[],
                                  tools=toolset_from_spec(self.spec))
            self._domain_key = key
        return self._domain


class Driver(Protocol):
    name: str

    def database(self, ctx: SynthesisContext) -> dict: ...

    def tools(self, ctx: SynthesisContext) -> list[dict]: ...

    def tasks(self, ctx: SynthesisContext, n: int) -> list[dict]: ...

    def evolve(self, ctx: SynthesisContext, tasks: list[dict]) -> list[dict]: ...


def _load_seed(ctx: SynthesisContext) -> None:
    src = ctx.config.source or ctx.config.domain
    try:
        seed = load_domain(src, tools=toolset_from_spec([]))
    except DomainError as e:
        raise DomainError(f"seed domain {src!r}: {e}") from None
    ctx.source_dir, ctx.policy, ctx.db = seed.path, seed.policy, seed.db


class ProgrammaticDriver:
    """Schema-derived tools and DB-composed tasks; needs no model."""

    name = "programmatic"

    def __init__(self):
        self._plans: dict[str, dict] = {}
        self._composer: Optional[Composer] = None

    def database(self, ctx: SynthesisContext) -> dict:
        _load_seed(ctx)
        return ctx.db

    def tools(self, ctx: SynthesisContext) -> list[dict]:
        return derive_tools(ctx.db, ctx.infos, max_tools=ctx.config.max_tools, domain=ctx.name)

    def _composer_for(self, ctx: SynthesisContext) -> Composer:
        if self._composer is None:
            self._composer = Composer(ctx.name, ctx.db, ctx.infos, ctx.spec, ctx.report,
                                      seed=ctx.config.seed)
        return self._composer

    def _render(self, ctx: SynthesisContext, plan: dict, tid: str) -> Optional[dict]:
        creates = []
        if plan.get("new_id_of"):
            creates.append(plan["new_id_of"])
        creates += plan.get("extra_new_ids", [])
        new_ids: list = []
        if creates:
            new_ids = replay_new_ids(ctx.domain(), plan["actions"], [c[0] for c in creates],
                                     [c[1] for c in creates])
            if new_ids is None:
                ctx.drop("tasks", f"{tid}: create action did not run")
                return None
        task = render_task(ctx.name, tid, plan, new_ids)
        self._plans[tid] = plan
        return task

    def tasks(self, ctx: SynthesisContext, n: int) -> list[dict]:
        comp = self._composer_for(ctx)
        out = []
        for i in range(n):
            intent = comp.propose_intent()
            ctx.counts["intents.proposed"] += 1
            plan = comp.plan(intent) if intent else None
            if plan is None:
                ctx.drop("intents", f"infeasible intent {intent}")
                continue
            task = self._render(ctx, plan, f"{ctx.name}_{i:05d}")
            if task is not None:
                out.append(task)
        return out

    def evolve(self, ctx: SynthesisContext, tasks: list[dict]) -> list[dict]:
        comp = self._composer_for(ctx)
        out = []
        for t in tasks:
            plan = self._plans.get(t["id"])
            for r in range(ctx.config.evolve_rounds):
                plan = comp.evolve(plan) if plan else None
            if plan is None:
                ctx.drop("evolve", f"{t['id']}: no harder variant")
                continue
            task = self._render(ctx, plan, f"{t['id']}_h{ctx.config.evolve_rounds}")
            if task is not None:
                out.append(task)
        return out


def domain_policy(name: str, original: str, spec: list[dict]) -> str:
    """The synthesized domain's policy: generic agent rules + the tool list + the original
    ToolScale policy as background (its tool names may differ from the synthesized tools)."""
    lines = [f"# {name} agent policy (synthesized tools)", "",
             "You help one user per conversation with their own records only.",
             "- First identify the user's record with a find_* tool (or the id the user gives) "
             "and read it with a get_* tool before changing anything.",
             "- Before any write (update_*, set_*, add_*), state the exact change and get an "
             "explicit yes from the user.",
             "- Make at most one tool call per turn, and do not message the user in the same turn.",
             "- Tell the user what they ask for from the records; never invent information.",
             "- Transfer to a human agent only when the tools cannot handle the request.", "",
             "## Tools", ""]
    for e in spec:
        f = e["function"]
        args = ", ".join(f["parameters"].get("properties", {}))
        lines.append(f"- {f['name']}({args}) [{e.get('x-tool-type', 'read')}]: "
                     f"{f.get('description', '')}")
    if original.strip():
        lines += ["", "## Domain background (original ToolScale policy)", "",
                  "Where it names tools that are not listed above, use the listed tools.", "",
                  original.strip()]
    return "\n".join(lines) + "\n"


def write_domain(ctx: SynthesisContext, tasks: list[dict]) -> pathlib.Path:
    out = pathlib.Path(ctx.config.out)
    out.mkdir(parents=True, exist_ok=True)

    def dump(name: str, obj: Any) -> None:
        tmp = out / f".{name}.tmp"
        tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(out / name)

    dump("db.json", ctx.db)
    dump("tools.json", ctx.spec)
    dump("tasks.json", tasks)
    dump("split_tasks.json", {"train": [t["id"] for t in tasks]})  # [P] no held-out split
    (out / "policy.md").write_text(domain_policy(ctx.name, ctx.policy, ctx.spec), encoding="utf-8")
    return out


def synthesize(config: SynthesisConfig, driver: Optional[Driver] = None,
               log: Any = print) -> dict:
    """Run the pipeline; returns the report (also written to ``<out>/synthesis_report.json``)."""
    if config.num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {config.num_tasks}")
    if driver is None:
        if config.driver == "programmatic":
            driver = ProgrammaticDriver()
        elif config.driver == "llm":
            from orchestra_jax.data.toolscale.llm_driver import LLMDriver
            driver = LLMDriver.from_config(config)
        else:
            raise ValueError(f"driver must be 'programmatic' or 'llm', got {config.driver!r}")
    t0 = time.time()
    ctx = SynthesisContext(config=config, name=config.domain, source_dir=None,
                           rng=random.Random(config.seed))
    ctx.db = driver.database(ctx)
    ctx.infos = infer_collections(ctx.db)
    if not ctx.infos:
        raise ValueError(f"database for {config.domain!r} has no keyed collections")
    ctx.report = validate_entries(ctx.db, ctx.infos)
    ctx.counts["entries.checked"] = ctx.report.checked
    ctx.counts["entries.invalid"] = len(ctx.report.problems)
    log(f"[{config.domain}] database: {len(ctx.infos)} collections, {ctx.report.checked} "
        f"entries, {len(ctx.report.problems)} invalid (excluded from tasks)")
    ctx.spec = driver.tools(ctx)
    toolset_from_spec(ctx.spec)  # raises on an invalid spec
    ctx.counts["tools"] = len(ctx.spec)
    log(f"[{config.domain}] tools: {len(ctx.spec)}")
    n_base = max(1, config.num_tasks * config.oversample)
    base = driver.tasks(ctx, n_base)
    ctx.counts["tasks.candidates"] = len(base)
    n_evolve = int(round(len(base) * config.evolve_fraction))
    harder = driver.evolve(ctx, base[:n_evolve]) if n_evolve else []
    ctx.counts["tasks.evolved"] = len(harder)
    domain = ctx.domain()
    kept = []
    for t in harder + base:     # harder variants first: they make the set harder on average
        ok, reason = check_task(domain, t)
        if ok:
            kept.append(t)
        else:
            ctx.drop("filter", f"{t.get('id')}: {reason}")
    ctx.counts["tasks.passed_filters"] = len(kept)
    kept, n_dup = dedup(kept)
    ctx.counts["tasks.duplicates"] = n_dup
    # interleave harder and base tasks deterministically, then cut to num_tasks
    ctx.rng.shuffle(kept)
    tasks = sorted(kept[:config.num_tasks], key=lambda t: t["id"])
    ctx.counts["tasks.written"] = len(tasks)
    out = write_domain(ctx, tasks)
    report = {"domain": config.domain, "driver": driver.name, "out": str(out),
              "counts": dict(ctx.counts), "drops": ctx.drops[:50],
              "seconds": round(time.time() - t0, 2),
              "invalid_entries": [{"collection": list(p), "keys": list(k), "problem": m}
                                  for p, k, m in ctx.report.problems[:50]]}
    (out / "synthesis_report.json").write_text(json.dumps(report, indent=1) + "\n")
    log(f"[{config.domain}] wrote {len(tasks)} tasks to {out} "
        f"({len(kept)} passed filters, {n_dup} duplicates) in {report['seconds']} s")
    if len(tasks) < config.num_tasks:
        log(f"[{config.domain}] WARNING: only {len(tasks)} of {config.num_tasks} tasks survived")
    return report
