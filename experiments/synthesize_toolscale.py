"""Synthesize a ToolScale domain folder (DB, policy, tools, tau2 tasks). See the config header."""

import dataclasses
import json

from absl import app
from ml_collections import config_flags

from orchestra_jax.data.toolscale import SynthesisConfig, synthesize

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthesize_toolscale.py")


def main(argv):
    del argv
    c = _CONFIG.value
    if not c.out:
        raise app.UsageError("--config.out=DIR is required (the domain folder to write)")
    fields = {f.name for f in dataclasses.fields(SynthesisConfig)}
    cfg = SynthesisConfig(**{k: v for k, v in c.to_dict().items() if k in fields})
    report = synthesize(cfg)
    print(json.dumps(report["counts"], indent=1))


if __name__ == "__main__":
    app.run(main)
