"""orchestra_jax.models"""
