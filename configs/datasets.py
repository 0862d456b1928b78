"""Build the TFDS datasets (array_record, no TensorFlow) into one data_dir.

    .venv/bin/python experiments/build_datasets.py --config=configs/datasets.py \
        --config.data_dir=/tmp/oj_tfds [--config.hle_manual_dir=DIR] [--config.gt_manual_dir=DIR] \
        [--config.toolscale_dirs=/tmp/bank,/tmp/movie] [--config.preferences=pairs.jsonl]

Expect (2-core CPU): tau2 airline/retail/telecom tasks + FRAMES (824) build in ~10 s total;
each synthesized ToolScale folder in ~1 s; HLE / GeneralThought only when their manual_dir is
given (otherwise skipped with the download instructions printed). Read back with
`orchestra_jax.data.builders.load_split(kind, data_dir=..., name=..., split=...)`.
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.data_dir = ""                                  # required
    c.tau2_domains = "airline,retail,telecom"        # [P] eval: τ²-Bench telecom, retail, airline
    c.tau2_root = ""                                 # default: ../shared/data/tau2/domains
    c.frames = ""                                    # default: ../shared/data/frames/frames.jsonl
    c.toolscale_dirs = ""                            # comma-separated synthesized domain folders
    c.hle_manual_dir = ""                            # gated: see orchestra_jax/data/sources.HLE_HELP
    c.gt_manual_dir = ""                             # GeneralThought-430K-filtered parquet files
    c.preferences = ""                               # JSONL (instruction, P, split) pairs -> *_pref variants
    c.preference_seed = 0
    return c
