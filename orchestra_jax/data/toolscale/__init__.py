"""ToolScale synthesis (paper §3.3, App. I): DB → tools → intents → tasks → harder → filters.

``synthesize(SynthesisConfig(domain="bank", out=DIR))`` writes a tau2-format domain folder that
``orchestra_jax.envs.tau2.load_domain(DIR)`` loads. See :mod:`.pipeline` for the stages and the
two drivers (programmatic, LLM).
"""

from orchestra_jax.data.toolscale.pipeline import (ProgrammaticDriver, SynthesisConfig,
                                                   synthesize, write_domain)

__all__ = ["ProgrammaticDriver", "SynthesisConfig", "synthesize", "write_domain"]
