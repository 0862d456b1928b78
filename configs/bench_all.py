"""Every CPU benchmark, then BENCHMARKS.md's generated sections rewritten.

Run:    .venv/bin/python experiments/bench_all.py --config=configs/bench_all.py
        (--config.sections='("train","decode")' to rerun some; --config.write=False to only print)
Expect: < 20 min on the quiet 2-core CPU box: train (~3 min), decode (~5 min), the sglang-jax
        server (~3 min), rollout + a 2-step GRPO run (~3 min), weight sync (~2 min), the 8B memory plan
        on 8 and 16 fake devices (~5 min). Each section prints a JSON summary; BENCHMARKS.md gets
        one table per section (goal, measured ratio, met, date, command) plus profiles where a
        goal is missed. The hand-recorded sections of the file are kept.
"""
import ml_collections



def _load(name):
    import importlib.util
    import pathlib
    p = pathlib.Path(__file__).resolve().parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_all_{name}", p)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.sections = ("train", "decode", "sglang", "rollout", "weight_sync", "memory")
    c.train = _load("bench_train")
    c.decode = _load("bench_decode")
    c.decode.sglang = False          # its own section ("sglang"), with its own time limit
    c.rollout = _load("bench_rollout")
    c.weight_sync = _load("bench_weight_sync")
    c.memory = ml_collections.ConfigDict()
    c.memory.config = "configs/plan_grpo_8b.py"
    c.memory.meshes = ((1, 8, 1), (1, 16, 1))
    c.memory.devices_list = (8, 16)
    c.memory.mesh = (1, 16, 1)       # set per child run
    c.memory.devices = 16            # set per child run
    c.memory.overrides = {}
    c.timeout_s = 900.0              # per section (per mesh for memory)
    c.extra_args = ()                # passed to every child, e.g. ("--config.train.repeats=2",)
    c.write = True
    c.benchmarks_md = "BENCHMARKS.md"
    c.json_summary = ""              # also write all results as JSON here
    c.run_one = ""                   # internal: the child runs this one section
    c.json_out = ""                  # internal: where the child writes its result
    return c
