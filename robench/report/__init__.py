"""The report room: what a run's rows become, read back from its folder.

Owns the summary (one row per strategy and cell, both protocols), the worst case, intervals and
paired tests (``uncertainty``), which strategies get a rank (``rankable``) and the rank
(``board``), the sanity flags, minimal eps*, per-class and confusion figures, the markdown page
(``leaderboard``), its plots, exports, where it is published and merged from, and the static
website (``site``, ``site_table``, ``site_assets/``).

May import: ``robench.core`` and the public contracts. Never the pipeline or the CLI: a page can
be re-made from a run folder on a machine that never trains (tests/test_architecture.py).
"""
