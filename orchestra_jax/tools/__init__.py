"""orchestra_jax.tools"""
