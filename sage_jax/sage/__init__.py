"""The SAGE method as pure jnp functions on arrays (no Flax modules, no I/O)."""
