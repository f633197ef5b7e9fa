"""The pipeline room: one run from its settled plan to its rows.

Owns ``RunConfig`` and the plan (``plan``: every spec resolved into a plugin, device, precision,
threads and data settled once, then handed down), the data preparation (``prepare``), the models
(``models``, ``train``, ``features``, ``checkpoints``), the attacks on them (``evaluate``,
``answers``, ``escalation``), the model jobs and their executors (``model_job``, ``executors``),
resume and the run's fingerprint and provenance; ``runner.run`` drives them in that order and
asks the report room for the page at the end.

May import: ``robench.report``, ``robench.data``, ``robench.core`` and the public contracts.
Never ``robench.cli`` or ``robench.api`` (tests/test_architecture.py).
"""
