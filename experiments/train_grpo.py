"""GRPO training of the orchestrator (config: configs/grpo_*.py; header = command + expectation).

  python experiments/train_grpo.py --config=configs/grpo_cpu_demo.py --workdir=DIR \
      [--config.total_steps=N] [--config.seed=S] [--config.mesh='(1,8,1)'] \
      [--config.tasks_per_step=T] [--config.group_size=G]

Resumes from DIR when it holds a checkpoint; writes DIR/metrics.jsonl (one row per step),
TensorBoard events, DIR/trajectories/step_*.jsonl, DIR/viewer.html and DIR/hf at the end.
Multi-process: ORCHESTRA_COORDINATOR / ORCHESTRA_NUM_PROCESSES / ORCHESTRA_PROCESS_ID (or SLURM /
TPU auto-detection); every process runs this same command.
"""
from absl import app, flags
from ml_collections import config_flags

from orchestra_jax.data.preferences import TemplatePreferences
from orchestra_jax.train import distributed
from orchestra_jax.train.cli import run_cli, to_dict
from orchestra_jax.train.grpo_loop import config_from_dict, run_grpo

_CONFIG = config_flags.DEFINE_config_file("config", "configs/grpo_cpu_demo.py")
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics)",
                               required=True)


def main(argv) -> None:
    del argv

    def go():
        distributed.initialize()
        d = to_dict(_CONFIG.value)
        summary = run_grpo(config_from_dict(d), _WORKDIR.value, preferences=TemplatePreferences(),
                           config_snapshot=d)
        print(f"done: {_WORKDIR.value}/metrics.jsonl {summary or ''}")
    run_cli(go)


if __name__ == "__main__":
    app.run(main)
