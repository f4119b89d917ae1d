"""The alias package ``e3nn`` that runs e3nn's own o3 tests against equitensor.

``e3nn.o3`` (and ``e3nn.nn.Identity``) are equitensor's public names; everything else, the test
harness (``e3nn.util``) and e3nn's top-level optimisation defaults, is e3nn's own code, read from
the e3nn source release named by ``E3NN_SOURCE`` (its ``e3nn/`` folder), unchanged.
"""

import os
from pathlib import Path

_SOURCE = Path(os.environ["E3NN_SOURCE"])
exec(compile((_SOURCE / "__init__.py").read_text(), str(_SOURCE / "__init__.py"), "exec"))
# o3 and nn from this folder, util (the harness) and math from e3nn's source.
__path__ = [str(Path(__file__).parent), str(_SOURCE)]
