"""orchestra_jax: a JAX reproduction of ToolOrchestra (arXiv 2511.21689)."""

__version__ = "0.1.0"
