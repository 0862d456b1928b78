"""orchestra_jax.data"""
