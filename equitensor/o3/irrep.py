"""Irreps by attribute, as e3nn's ``o3.irrep``: ``irrep.l1o`` is ``Irrep("1o")``.

>>> from equitensor.o3 import irrep
>>> irrep.l2e
2e
"""


def __getattr__(name: str):
    from equitensor.irreps import Irrep  # here, not above: equitensor.irreps imports equitensor.o3

    if name.startswith("l") and len(name) > 1:
        try:
            return Irrep(name[1:])
        except ValueError:
            pass
    raise AttributeError(
        f"module 'equitensor.o3.irrep' has no attribute {name!r} (expected l<degree><e|o|y>)"
    )
