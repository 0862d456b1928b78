"""orchestra_jax.eval"""
