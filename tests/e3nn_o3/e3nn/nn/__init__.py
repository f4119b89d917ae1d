"""``e3nn.nn`` for the o3 tests: only e3nn's ``Identity`` (a test helper that checks irreps and
returns its input), e3nn's own code."""

import importlib.util
import os
from pathlib import Path

_path = Path(os.environ["E3NN_SOURCE"]) / "nn" / "_identity.py"
_spec = importlib.util.spec_from_file_location("e3nn.nn._identity", _path)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
Identity = _module.Identity
