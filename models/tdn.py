"""TDN-style MACE (Lin et al., NeurIPS 2025: "Tensor Decomposition Networks"): the edge tensor
products through CP-decomposed Clebsch-Gordan tensors (the ``cp`` backend) with path-weight
sharing, everything else MACE.

What is TDN's and what is not:

- the convolution's CG tensors are rank-``rank`` CP decompositions, one per path (the ``cp``
  backend; TDN fits one tensor over all degrees, which ties all paths to one weight anyway, see
  ``equitensor.tp.backends.cp``); ``rank="full"`` or any rank at or above every path's exact CP
  rank computes MACE's numbers; below it the product is approximate and no longer exactly
  equivariant, so it is opt-in (``allow_approximate=True``) and ``equivariance_report()`` gives
  the measured error of each convolution;
- path-weight sharing: the radial MLP gives one weight per edge and channel, used by every path;
- unlike TDN's reference (SO(3) irreps ``1x{l}e`` without a parity filter), the irreps keep O(3)
  parities, so the model is E(3)-equivariant at exact rank; the product basis is MACE's symmetric
  contraction (``product_backend`` as in MACE).
"""

from __future__ import annotations

from collections.abc import Sequence

from equitensor.models.mace import MACE


class TDN(MACE):
    """MACE with CP-decomposed, path-weight-shared edge tensor products (``cp`` backend).

    ``rank``: CP rank of every path's CG tensor (an int, or "full" for exact); a rank below a
    path's exact rank needs ``allow_approximate=True``. Every other argument is MACE's (but not
    ``backend``/``conv_options``/``shared_path_weights``, which this model sets).

    >>> from ase.build import molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> from equitensor.models import TDN
    >>> model = TDN([1, 8], rank=2, allow_approximate=True, r_max=3.0, num_channels=4, max_ell=1,
    ...             correlation=2, radial_MLP=[8]).double()
    >>> model(graph_from_atoms(molecule("H2O"), model.r_max))["forces"].shape
    torch.Size([3, 3])
    >>> report = model.equivariance_report()  # rank 2 < the exact 3: approximate, measured
    >>> sorted(report), all(0 < error < 1 for error in report.values())
    (['interactions.0.conv.product.executor', 'interactions.1.conv.product.executor'], True)
    """

    def __init__(
        self,
        atomic_numbers: Sequence[int],
        rank: int | str = "full",
        allow_approximate: bool = False,
        **mace_arguments,
    ) -> None:
        fixed = sorted({"backend", "conv_options", "shared_path_weights"} & set(mace_arguments))
        if fixed:
            raise ValueError(f"TDN sets {', '.join(fixed)} itself (cp backend, path-weight sharing)")
        super().__init__(
            atomic_numbers,
            backend="cp",
            conv_options={"rank": rank, "allow_approximate": bool(allow_approximate)},
            shared_path_weights=True,
            **mace_arguments,
        )
        config = {
            k: v
            for k, v in self.config.items()
            if k not in ("backend", "conv_options", "shared_path_weights")
        }
        self.config = {**config, "rank": rank, "allow_approximate": bool(allow_approximate)}

    #: the cp products are plain torch operations; only the product basis has kernels
    portable_backends = {"product_backend": "cg"}
    kernel_backends = {"product_backend": "sparse"}
