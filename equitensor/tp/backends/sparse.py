"""The ``sparse`` backend: compiled kernels that loop over the non-zero coefficients only (C++ on
the CPU, CUDA on a GPU: ``cuda/sparse_contract.cu``).

Both hot operations of MACE-like models run on one kernel, ``equitensor::sparse_contract``
(:mod:`equitensor.kernels.sparse_contract`: channels innermost, gather and scatter fused in, any
derivative order from the same kernel):

* the edge convolution (``EdgeConvolution(backend="sparse")``):
  ``out[receiver, k, c] += C[i, j, k] x[sender, i, c] Y[edge, j] w[edge, path, c]`` over the
  non-zero real CG coefficients of every 'uvu' path, one pass over the edges, no per-edge
  message tensor;
* the product basis (``SymmetricContraction(backend="sparse")``), see
  :mod:`equitensor.nn.symmetric_contraction`.

The edge convolution needs one multiplicity for every node-feature block (MACE's case) and
weighted 'uvu' paths with SH blocks of multiplicity 1; other specs are refused naming the path.
The C++ source is compiled at first use and cached (the CUDA one with NVRTC, through CuPy); where
either cannot be built, ``available`` says why and ``auto`` does not consider it.
"""

from __future__ import annotations

import torch
from torch import nn

from equitensor.devices import Float64Constant
from equitensor.kernels.edge_conv import ir_mul_permutation
from equitensor.kernels.edge_conv_plan import edge_conv_limitations, plan_from_key, plan_key
from equitensor.tp.backends.capabilities import BackendCapabilities, Limitation, register_backend
from equitensor.tp.spec import TensorProductSpec


def sparse_limitations(spec: TensorProductSpec) -> list[Limitation]:
    """Why the kernels cannot compute ``spec`` as an edge convolution: non-'uvu' or unweighted
    paths, SH blocks of multiplicity > 1, or node blocks of different multiplicities. (Every
    product basis, a ``ProductBasisSpec``, is computable.)"""
    if not isinstance(spec, TensorProductSpec):
        return []
    problems = [
        Limitation(index, reason.replace("the kernels", "the sparse kernels"))
        for index, reason in edge_conv_limitations(spec)
    ]
    muls = {mul for mul, _ in spec.irreps_in1}
    if len(muls) > 1:
        problems.append(
            Limitation(
                None,
                f"node features {spec.irreps_in1} have several multiplicities; the sparse "
                "kernels need one (channels innermost, e.g. 32x0e+32x1o)",
            )
        )
    return problems


def sparse_available(device: torch.device) -> str | None:
    """Why the kernels cannot run on ``device`` here, or None: no C++ compiler (the op and its
    autograd are C++ on every device); on a GPU also no CuPy, and, for ``auto``, kernels not yet
    validated on a GPU (``equitensor.kernels.GPU_VALIDATED``; ask for ``backend='sparse'``
    explicitly to use them)."""
    if device.type not in ("cpu", "cuda"):
        return f"the sparse kernels run on CPU and CUDA tensors, not {device.type}"
    from equitensor.kernels.sparse_contract import available

    problem = available()
    if problem is None and device.type == "cuda":
        from equitensor.tp.backends.cuda import cuda_available

        problem = cuda_available(device)
    return problem


class SparseEdgeProduct(nn.Module):
    """Gather, 'uvu' product with the SH of the edge and receiver sum in one C++ pass over edges.

    Built from the same :class:`TensorProductSpec` as the cg backend (same weights, same
    layout). Call as ``product(node_feats, sh, edge_weights, edge_index)``; returns the per-node
    sums (N, irreps_out.dim) in e3nn's mul_ir layout. The term table (int32 components, float64
    coefficients) follows the module's device and keeps its dtype.
    """

    coefficients = Float64Constant()

    def __init__(self, spec: TensorProductSpec) -> None:
        super().__init__()
        problems = sparse_limitations(spec)
        if problems:
            listed = "\n".join(f"  - {p}" for p in problems)
            raise ValueError(f"the 'sparse' backend cannot compute this edge convolution:\n{listed}")
        from equitensor.kernels.sparse_contract import load

        load()  # KernelUnavailableError now, not at the first call
        self.spec = spec
        plan = plan_from_key(plan_key(spec))
        self.channels = spec.irreps_in1[0].mul if len(spec.irreps_in1) else 0
        self.node_dim = sum(block.dim for block in plan.node)
        self.out_dim = sum(block.dim for block in plan.out)
        rows, values = [], []
        for p, path in enumerate(plan.paths):
            node, sh, out = plan.node[path.node], plan.sh[path.sh], plan.out[path.out]
            for i, j, k, value in path.nonzeros:
                rows.append((node.slot + i, sh.offset + j, p, out.slot + k))
                values.append(value)
        self.num_paths = len(plan.paths)
        to_ir_mul = ir_mul_permutation(spec.irreps_in1)
        self.register_buffer("node_to_ir_mul", to_ir_mul, persistent=False)
        self.register_buffer("out_to_mul_ir", ir_mul_permutation(spec.irreps_out).argsort(), persistent=False)
        self.register_buffer(
            "components", torch.tensor(rows, dtype=torch.int32).reshape(-1, 4), persistent=False
        )
        self.coefficients = torch.tensor(values, dtype=torch.float64)

    uses_sh = True

    def forward(
        self,
        node_feats: torch.Tensor,
        edge_vectors: torch.Tensor,
        sh: torch.Tensor,
        edge_weights: torch.Tensor,
        edge_index: torch.Tensor,
    ) -> torch.Tensor:
        from equitensor.kernels.sparse_contract import sparse_contract

        n, e, c = node_feats.shape[0], sh.shape[0], self.channels
        sender, receiver = edge_index.to(torch.int64)
        x = node_feats.index_select(1, self.node_to_ir_mul).reshape(n, self.node_dim, c)
        w = edge_weights.reshape(e, self.num_paths, c).contiguous()
        out = sparse_contract(
            [x, sh.contiguous(), w],
            [sender.contiguous(), None, None],
            receiver.contiguous(),
            n,
            self.out_dim,
            c,
            self.components,
            self.coefficients,
        )
        return out.reshape(n, self.out_dim * c).index_select(1, self.out_to_mul_ir)


def _build_sparse_edge_convolution(spec: TensorProductSpec, **options) -> SparseEdgeProduct:
    if options:
        raise ValueError(f"the 'sparse' edge convolution takes no options, got {sorted(options)}")
    return SparseEdgeProduct(spec)


def _build_sparse_product_basis(spec, **options):
    from equitensor.nn.symmetric_contraction import SparseProductBasis

    if options:
        raise ValueError(f"the 'sparse' product basis takes no options, got {sorted(options)}")
    return SparseProductBasis(spec)


CAPABILITIES = BackendCapabilities(
    name="sparse",
    summary="compiled kernels (C++ on CPU, CUDA on GPU) over the non-zero CG / generalised-CG "
    "coefficients, channels innermost, gather and scatter fused (edge convolution; MACE product basis)",
    builders={
        "edge_convolution": _build_sparse_edge_convolution,
        "product_basis": _build_sparse_product_basis,
    },
    paths="weighted 'uvu' node x SH(edge) paths with one node multiplicity (EdgeConvolution); "
    "every symmetric contraction (SymmetricContraction)",
    weights="same as cg: per edge, path and channel; per element, path and channel",
    exact=True,
    error="float round-off (summation order differs from cg)",
    max_derivative_order=None,  # every derivative is the same kernel with operands swapped
    devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
    limitations=sparse_limitations,
    available=sparse_available,
)

register_backend(CAPABILITIES)
