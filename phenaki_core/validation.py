"""What "a whole number" and "a number" mean for every value a user hands in.

Every config (``config``, ``sampling.SamplerConfig``, ``training.config``, ``data``) and every
entry point (pipeline, trainer, nodes) checks its values with these predicates, so a setting is
accepted or refused the same way wherever it is given. ``True`` is an ``int`` to Python but never a
count or a number here, and NaN and infinities are never numbers. The caller raises its own error
type, with a message that names the setting as the user wrote it.
"""

from __future__ import annotations

import math
from typing import Any, Optional


def is_int(value: Any, minimum: Optional[int] = None) -> bool:
    """A whole number (not a bool), at least ``minimum`` when one is given."""
    return isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum)


def is_number(value: Any, minimum: Optional[float] = None, maximum: Optional[float] = None) -> bool:
    """A finite int or float (not a bool), within [``minimum``, ``maximum``] where they are given."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and (minimum is None or value >= minimum) and (maximum is None or value <= maximum))
