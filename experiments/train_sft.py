"""Supervised fine-tuning of the policy (config: configs/sft_*.py; header = command + expectation).

  python experiments/train_sft.py --config=configs/sft_cpu_demo.py --workdir=DIR \
      [--config.data=FILE] [--config.total_steps=N] [--config.seed=S] [--config.mesh='(1,8,1)']

Resumes from DIR when it holds a checkpoint; writes DIR/metrics.jsonl, TensorBoard events and (at
the end) a transformers checkpoint in DIR/hf. Multi-process: set ORCHESTRA_COORDINATOR /
ORCHESTRA_NUM_PROCESSES / ORCHESTRA_PROCESS_ID (or run under SLURM / on a TPU slice).
"""
from absl import app, flags
from ml_collections import config_flags

from orchestra_jax.train import distributed
from orchestra_jax.train.cli import build_dataclass, run_cli, to_dict
from orchestra_jax.train.sft_loop import SFTConfig, run_sft

_CONFIG = config_flags.DEFINE_config_file("config", "configs/sft_cpu_demo.py")
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics)",
                               required=True)


def main(argv) -> None:
    del argv

    def go():
        distributed.initialize()
        cfg = build_dataclass(SFTConfig, _CONFIG.value)
        last = run_sft(cfg, _WORKDIR.value, config_snapshot=to_dict(_CONFIG.value))
        print(f"done: {_WORKDIR.value}/metrics.jsonl (last: {last})")
    run_cli(go)


if __name__ == "__main__":
    app.run(main)
