"""The one folder where equitensor keeps what it computes once and reuses on later runs.

``$EQUITENSOR_CACHE/<name>`` if that variable is set, else ``$XDG_CACHE_HOME/equitensor/<name>``,
else ``~/.cache/equitensor/<name>``; ``name`` is the user's subfolder (``cp`` for fitted CP
factors, ``auto`` for the auto backend's choices).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(name: str) -> Path:
    """The cache subfolder ``name`` (not created here: writers create it when they write)."""
    root = os.environ.get("EQUITENSOR_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "equitensor")
    return Path(root) / name
