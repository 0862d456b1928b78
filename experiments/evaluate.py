"""Evaluates one method on one benchmark → OUT/records.jsonl (config: configs/eval_*.py).

    .venv/bin/python experiments/evaluate.py --config=configs/eval_tau2.py \
        --config.domain=airline --config.tasks=FILE --config.out=DIR [--config.limit=N]

Re-running the same command resumes: examples already in DIR/records.jsonl are skipped.
"""
import json

from absl import app
from ml_collections import config_flags

from orchestra_jax.eval.runner import EvalSpec, evaluate
from orchestra_jax.eval.viewer import write_viewer

_CONFIG = config_flags.DEFINE_config_file("config", "configs/eval_tau2.py")


def main(argv) -> None:
    del argv
    spec = EvalSpec.from_mapping(_CONFIG.value.to_dict())
    summary = evaluate(spec)
    page = write_viewer(spec.out)
    print(json.dumps(summary, indent=1))
    print(f"records: {spec.out}/records.jsonl; viewer: {page}")


if __name__ == "__main__":
    app.run(main)
