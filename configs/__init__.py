"""The shipped configs (``sage-jax COMMAND --config NAME``). Installed as the package
``sage_jax._configs`` (pyproject.toml ``[tool.setuptools]``); :func:`sage_jax.config.load_config`
loads them by name from there, or from this folder of a clone."""
