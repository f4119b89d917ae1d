"""Custom ops ``equitensor::edge_conv_fwd`` and ``equitensor::edge_conv_bwd`` (torch.library).

Both work in the plan's internal layout (ir_mul node features and outputs, see
:mod:`.edge_conv_plan`) and take the graph as ``edge_index`` (2, E) int64 (senders, receivers)
plus ``csr``: empty for the default (atomic) mode, or the packed receiver/sender CSR of
:func:`edge_csr` for the deterministic mode.

* CUDA: the kernels of ``cuda/edge_conv.cu`` for the plan.
* CPU: a plain-torch reference of exactly what the kernels compute (same layout, same constants,
  same use of the CSR arrays), so the op graph and its derivatives can be checked without a GPU.
* Meta: shapes only (torch.compile, export).

Autograd. ``fwd`` is trilinear in (x, sh, weight) per edge; its backward is ``bwd``. ``bwd`` is
linear in each argument and its own backward is built from ``fwd`` and ``bwd`` with substituted
arguments (every derivative of a multilinear map is again such a map), so derivatives of any
order run on the same kernels. ``mask`` selects the gradients ``bwd`` computes (GRAD_X, GRAD_SH,
GRAD_W); the others come back as empty tensors.
"""

from __future__ import annotations

import torch

from equitensor.devices import cached
from equitensor.kernels.edge_conv_plan import EdgeConvPlan, plan_from_key

GRAD_X, GRAD_SH, GRAD_W = 1, 2, 4


def edge_csr(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """The packed CSR of the deterministic mode: ``[recv_perm, send_perm, recv_ptr, send_ptr]``.

    ``recv_perm`` lists the edges sorted (stably) by receiver and ``recv_ptr`` (num_nodes + 1)
    where each receiver's edges start; the same by sender for the node-feature gradient.
    """
    senders, receivers = edge_index
    nodes = torch.arange(num_nodes + 1, device=edge_index.device, dtype=edge_index.dtype)
    parts = []
    for index in (receivers, senders):
        parts.append(torch.argsort(index, stable=True))
    for index, perm in zip((receivers, senders), parts[:2]):
        parts.append(torch.searchsorted(index[perm], nodes))
    return torch.cat(parts)


def _split_csr(csr: torch.Tensor, num_edges: int, num_nodes: int) -> tuple[torch.Tensor, ...]:
    """(recv_perm, send_perm, recv_ptr, send_ptr) views of a packed CSR."""
    e, n = num_edges, num_nodes + 1
    return csr[:e], csr[e : 2 * e], csr[2 * e : 2 * e + n], csr[2 * e + n :]


def _check(
    plan: EdgeConvPlan,
    x: torch.Tensor,
    sh: torch.Tensor,
    weight: torch.Tensor,
    edge_index: torch.Tensor,
    csr: torch.Tensor,
    grad_out: torch.Tensor | None = None,
) -> None:
    """Shapes, dtypes and devices of the op arguments; ValueError naming the first mismatch."""
    n, e = x.shape[0], edge_index.shape[-1]
    expected = {
        "x": (x, (n, plan.node_dim)),
        "sh": (sh, (e, plan.sh_dim)),
        "weight": (weight, (e, plan.weight_numel)),
    }
    if grad_out is not None:
        expected["grad_out"] = (grad_out, (n, plan.out_dim))
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"edge_conv: {name} has shape {tuple(tensor.shape)}, expected {shape}")
        if tensor.dtype != x.dtype or tensor.device != x.device:
            raise ValueError(
                f"edge_conv: {name} is {tensor.dtype} on {tensor.device}, x is {x.dtype} on {x.device}"
            )
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"edge_conv: float32 or float64 features needed, got {x.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2 or edge_index.dtype != torch.int64:
        raise ValueError(
            "edge_conv: edge_index must be int64 of shape (2, E), "
            f"got {edge_index.dtype} {tuple(edge_index.shape)}"
        )
    if csr.numel() not in (0, 2 * e + 2 * (n + 1)) or csr.dtype != torch.int64:
        raise ValueError(
            "edge_conv: csr must be empty or the int64 packed CSR of edge_csr "
            f"(length {2 * e + 2 * (n + 1)}), "
            f"got {csr.dtype} of length {csr.numel()}"
        )
    for name, tensor in (("edge_index", edge_index), ("csr", csr)):
        if tensor.device != x.device:
            raise ValueError(f"edge_conv: {name} is on {tensor.device}, x on {x.device}")


# ----------------------------------------------------------------------------------------------
# CPU reference: what the kernels compute, in plain torch

_DENSE: dict[tuple[str, torch.dtype, torch.device], list[torch.Tensor]] = {}


def _dense_cg(plan: EdgeConvPlan, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """Per path the (2l1+1, 2l2+1, 2l3+1) tensor of the plan's non-zero constants (cached per
    dtype and device)."""

    def build() -> list[torch.Tensor]:
        tensors = []
        for p in plan.paths:
            c = torch.zeros(
                plan.node[p.node].dim, plan.sh[p.sh].dim, plan.out[p.out].dim, dtype=torch.float64
            )
            for i, j, k, value in p.nonzeros:
                c[i, j, k] = value
            tensors.append(c.to(device=device, dtype=dtype))
        return tensors

    return cached(_DENSE, (plan.key, dtype, device), build)


def _block(t: torch.Tensor, block) -> torch.Tensor:
    """(rows, dim, mul) view of an ir_mul block."""
    return t[:, block.offset : block.offset + block.dim * block.mul].reshape(t.shape[0], block.dim, block.mul)


def _sum_into(
    rows: int, index: torch.Tensor, values: torch.Tensor, csr: torch.Tensor | None, ptr_perm
) -> torch.Tensor:
    """``out[index[e]] += values[e]``; with a CSR, through its permutation and row pointers
    (exactly the arrays the deterministic kernels read)."""
    out = values.new_zeros((rows, values.shape[1]))
    if csr is None:
        return out.index_add_(0, index, values)
    ptr, perm = ptr_perm
    rows_of_sorted = torch.repeat_interleave(torch.arange(rows, device=values.device), ptr.diff())
    return out.index_add_(0, rows_of_sorted, values.index_select(0, perm))


def _sh_times_cg(sh: torch.Tensor, block, c: torch.Tensor) -> torch.Tensor:
    """``M[e, i, k] = sum_j c[i, j, k] sh[e, j]`` of one SH block."""
    y = sh[:, block.offset : block.offset + block.dim]
    c_jik = c.permute(1, 0, 2).reshape(c.shape[1], -1)
    return (y @ c_jik).reshape(sh.shape[0], c.shape[0], c.shape[2])


def reference_forward(
    plan: EdgeConvPlan, x: torch.Tensor, sh: torch.Tensor, weight: torch.Tensor, edge_index, csr
) -> torch.Tensor:
    n, e = x.shape[0], edge_index.shape[1]
    senders, receivers = edge_index
    xs = x.index_select(0, senders)
    messages = x.new_zeros((e, plan.out_dim))
    for p, c in zip(plan.paths, _dense_cg(plan, x.dtype, x.device)):
        node, sh_block, out = plan.node[p.node], plan.sh[p.sh], plan.out[p.out]
        m = _sh_times_cg(sh, sh_block, c)  # (E, i, k)
        w = weight[:, p.weight_offset : p.weight_offset + p.mul]
        message = torch.bmm(m.transpose(1, 2), _block(xs, node)) * w[:, None, :]  # (E, k, u)
        messages[:, out.offset : out.offset + out.dim * out.mul] += message.flatten(1)
    if csr.numel() == 0:
        return _sum_into(n, receivers, messages, None, None)
    recv_perm, _, recv_ptr, _ = _split_csr(csr, e, n)
    return _sum_into(n, receivers, messages, csr, (recv_ptr, recv_perm))


def reference_backward(
    plan: EdgeConvPlan, x, sh, weight, grad_out, edge_index, csr, mask: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, e = x.shape[0], edge_index.shape[1]
    senders, receivers = edge_index
    xs, gr = x.index_select(0, senders), grad_out.index_select(0, receivers)
    gx_edges = x.new_zeros((e, plan.node_dim)) if mask & GRAD_X else None
    gsh = x.new_zeros((e, plan.sh_dim)) if mask & GRAD_SH else x.new_empty(0)
    gw = x.new_zeros((e, plan.weight_numel)) if mask & GRAD_W else x.new_empty(0)
    for p, c in zip(plan.paths, _dense_cg(plan, x.dtype, x.device)):
        node, sh_block, out = plan.node[p.node], plan.sh[p.sh], plan.out[p.out]
        xb, gb = _block(xs, node), _block(gr, out)  # (E, i, u), (E, k, u)
        m = _sh_times_cg(sh, sh_block, c)  # (E, i, k)
        w = weight[:, p.weight_offset : p.weight_offset + p.mul]
        if gx_edges is not None:
            part = torch.bmm(m, gb * w[:, None, :])  # (E, i, u)
            gx_edges[:, node.offset : node.offset + node.dim * node.mul] += part.flatten(1)
        if mask & GRAD_SH:
            pairs = torch.bmm(xb, (gb * w[:, None, :]).transpose(1, 2))  # (E, i, k)
            c_ikj = c.permute(0, 2, 1).reshape(-1, c.shape[1])
            gsh[:, sh_block.offset : sh_block.offset + sh_block.dim] += pairs.flatten(1) @ c_ikj
        if mask & GRAD_W:
            gw[:, p.weight_offset : p.weight_offset + p.mul] = (torch.bmm(m.transpose(1, 2), xb) * gb).sum(1)
    gx = x.new_empty(0)
    if gx_edges is not None:
        if csr.numel() == 0:
            gx = _sum_into(n, senders, gx_edges, None, None)
        else:
            _, send_perm, _, send_ptr = _split_csr(csr, e, n)
            gx = _sum_into(n, senders, gx_edges, csr, (send_ptr, send_perm))
    return gx, gsh, gw


# ----------------------------------------------------------------------------------------------
# the ops


@torch.library.custom_op("equitensor::edge_conv_fwd", mutates_args=(), device_types="cpu")
def edge_conv_fwd(
    x: torch.Tensor,
    sh: torch.Tensor,
    weight: torch.Tensor,
    edge_index: torch.Tensor,
    csr: torch.Tensor,
    plan: str,
) -> torch.Tensor:
    """``out[r] = sum_{e: s -> r} TP_uvu(x[s], sh[e], weight[e])`` in the plan's ir_mul layout."""
    p = plan_from_key(plan)
    _check(p, x, sh, weight, edge_index, csr)
    return reference_forward(p, x, sh, weight, edge_index, csr)


@edge_conv_fwd.register_fake
def _(x, sh, weight, edge_index, csr, plan):
    p = plan_from_key(plan)
    _check(p, x, sh, weight, edge_index, csr)
    return x.new_empty((x.shape[0], p.out_dim))


@torch.library.custom_op("equitensor::edge_conv_bwd", mutates_args=(), device_types="cpu")
def edge_conv_bwd(
    x: torch.Tensor,
    sh: torch.Tensor,
    weight: torch.Tensor,
    grad_out: torch.Tensor,
    edge_index: torch.Tensor,
    csr: torch.Tensor,
    plan: str,
    mask: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``<grad_out, edge_conv_fwd(x, sh, weight)>`` w.r.t. x, sh, weight (those in
    ``mask``; the others are empty)."""
    p = plan_from_key(plan)
    _check(p, x, sh, weight, edge_index, csr, grad_out)
    return reference_backward(p, x, sh, weight, grad_out, edge_index, csr, mask)


@edge_conv_bwd.register_fake
def _(x, sh, weight, grad_out, edge_index, csr, plan, mask):
    p = plan_from_key(plan)
    _check(p, x, sh, weight, edge_index, csr, grad_out)
    return _empty_gradients(x, sh, weight, mask)


def _empty_gradients(x, sh, weight, mask: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(
        t.new_empty(t.shape) if mask & bit else t.new_empty(0)
        for t, bit in ((x, GRAD_X), (sh, GRAD_SH), (weight, GRAD_W))
    )


def _fwd_setup(ctx, inputs, output) -> None:
    x, sh, weight, edge_index, csr, plan = inputs
    ctx.save_for_backward(x, sh, weight, edge_index, csr)
    ctx.plan = plan


def _fwd_backward(ctx, grad_out):
    x, sh, weight, edge_index, csr = ctx.saved_tensors
    needs = ctx.needs_input_grad
    mask = (GRAD_X if needs[0] else 0) | (GRAD_SH if needs[1] else 0) | (GRAD_W if needs[2] else 0)
    if mask == 0:
        return None, None, None, None, None, None
    gx, gsh, gw = edge_conv_bwd(x, sh, weight, grad_out.contiguous(), edge_index, csr, ctx.plan, mask)
    return (
        gx if needs[0] else None,
        gsh if needs[1] else None,
        gw if needs[2] else None,
        None,
        None,
        None,
    )


edge_conv_fwd.register_autograd(_fwd_backward, setup_context=_fwd_setup)


def _bwd_setup(ctx, inputs, output) -> None:
    x, sh, weight, grad_out, edge_index, csr, plan, mask = inputs
    ctx.save_for_backward(x, sh, weight, grad_out, edge_index, csr)
    ctx.plan, ctx.mask = plan, mask


def _add(total: torch.Tensor | None, part: torch.Tensor) -> torch.Tensor:
    return part if total is None else total + part


def _bwd_backward(ctx, ggx, ggsh, ggw):
    """Derivatives of ``S = <ggx, gx> + <ggsh, gsh> + <ggw, gw>`` (gx, gsh, gw = bwd(x, sh, w, g)).

    With F the forward, S = <g, F(ggx, sh, w) + F(x, ggsh, w) + F(x, sh, ggw)>, hence
    dS/dg = those three forwards, and dS/dx, dS/dsh, dS/dw are backward products with one
    argument replaced by its cotangent.
    """
    x, sh, weight, grad_out, edge_index, csr = ctx.saved_tensors
    plan, mask = ctx.plan, ctx.mask
    ggx = ggx if mask & GRAD_X and ggx is not None else None
    ggsh = ggsh if mask & GRAD_SH and ggsh is not None else None
    ggw = ggw if mask & GRAD_W and ggw is not None else None
    need_x, need_sh, need_w, need_g = ctx.needs_input_grad[:4]
    dx = dsh = dw = dg = None

    def bwd(a, b, c, wanted: int):
        return edge_conv_bwd(
            a.contiguous(), b.contiguous(), c.contiguous(), grad_out, edge_index, csr, plan, wanted
        )

    if ggx is not None:
        wanted = (GRAD_SH if need_sh else 0) | (GRAD_W if need_w else 0)
        if wanted:
            _, gsh, gw = bwd(ggx, sh, weight, wanted)
            dsh = _add(dsh, gsh) if need_sh else dsh
            dw = _add(dw, gw) if need_w else dw
        if need_g:
            dg = _add(dg, edge_conv_fwd(ggx.contiguous(), sh, weight, edge_index, csr, plan))
    if ggsh is not None:
        wanted = (GRAD_X if need_x else 0) | (GRAD_W if need_w else 0)
        if wanted:
            gx, _, gw = bwd(x, ggsh, weight, wanted)
            dx = _add(dx, gx) if need_x else dx
            dw = _add(dw, gw) if need_w else dw
        if need_g:
            dg = _add(dg, edge_conv_fwd(x, ggsh.contiguous(), weight, edge_index, csr, plan))
    if ggw is not None:
        wanted = (GRAD_X if need_x else 0) | (GRAD_SH if need_sh else 0)
        if wanted:
            gx, gsh, _ = bwd(x, sh, ggw, wanted)
            dx = _add(dx, gx) if need_x else dx
            dsh = _add(dsh, gsh) if need_sh else dsh
        if need_g:
            dg = _add(dg, edge_conv_fwd(x, sh, ggw.contiguous(), edge_index, csr, plan))
    return dx, dsh, dw, dg, None, None, None, None


edge_conv_bwd.register_autograd(_bwd_backward, setup_context=_bwd_setup)


# ----------------------------------------------------------------------------------------------
# CUDA implementations (kernels from cuda/edge_conv.cu)


@edge_conv_fwd.register_kernel("cuda")
def _(x, sh, weight, edge_index, csr, plan):
    from equitensor.kernels import edge_conv_cuda

    p = plan_from_key(plan)
    _check(p, x, sh, weight, edge_index, csr)
    return edge_conv_cuda.forward(p, x, sh, weight, edge_index, csr)


@edge_conv_bwd.register_kernel("cuda")
def _(x, sh, weight, grad_out, edge_index, csr, plan, mask):
    from equitensor.kernels import edge_conv_cuda

    p = plan_from_key(plan)
    _check(p, x, sh, weight, edge_index, csr, grad_out)
    return edge_conv_cuda.backward(p, x, sh, weight, grad_out, edge_index, csr, mask)
