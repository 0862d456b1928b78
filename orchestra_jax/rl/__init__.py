"""orchestra_jax.rl"""
