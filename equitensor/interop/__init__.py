"""Bridges to other libraries' models (weights in and out, inputs in their format).

- :mod:`equitensor.interop.mace_torch`: ACEsuit/mace (``mace-torch``) ScaleShiftMACE and
  SymmetricContraction weights loaded into :class:`equitensor.models.MACE` and
  :class:`equitensor.nn.SymmetricContraction`.

Nothing here imports the other library at module import: it is needed only where it is called.
"""
