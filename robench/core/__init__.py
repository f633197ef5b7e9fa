"""The core room: what every other room shares, and nothing else.

Owns the run folder's files and how they are read back (``results``: rows and config.json;
``schema``: their checks; ``atomic``: all-or-nothing writes), names that become file names
(``names``), how metrics and eps are computed and printed (``metrics``), and the progress lines
a run prints (``progress``).

May import: the public contracts only (tests/test_architecture.py).
"""
