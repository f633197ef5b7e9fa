"""Reading a dataset's CSV with one clear line for each way it can be wrong."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from robench.errors import DataError


def read_csv(path: Path, columns: Sequence[str], *, hint: str) -> pd.DataFrame:
    """A CSV that must exist and hold `columns`, read as text; `hint` tells the user how to get a good copy."""
    if not path.is_file():
        raise DataError(f"{path} not found: {hint}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise DataError(f"{path} is not a readable CSV ({' '.join(str(error).split())}): {hint}") from None
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(missing)} (it has {', '.join(map(str, table.columns))}): {hint}")
    return table
