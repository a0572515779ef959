"""The shipped configs (``sage-jax COMMAND --config NAME``). ``sage_jax/_configs`` is a
symbolic link to this folder, so they install with the package as ``sage_jax._configs``
(a wheel copies them; an editable install reads this folder), and
:func:`sage_jax.config.load_config` loads them by name from any folder."""
