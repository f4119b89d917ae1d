"""Code generator of the per-configuration header ``edge_conv_config.cuh`` of ``cuda/edge_conv.cu``.

The header defines the sizes (``ET_*`` macros) and, for one channel ``u`` held by one thread,
fully unrolled device functions whose CG coefficients (normalization folded in) are compile-time
literals: loading a node/output row into registers, storing (plain or atomic), the forward
product and the backward products. Literals are written with ``repr`` of the float64 value
(shortest round-trip form, so exact) and cast to the kernel's scalar type ``T``.
"""

from __future__ import annotations

from collections import defaultdict

from equitensor.kernels.edge_conv_plan import Block, EdgeConvPlan, plan_from_key, plan_key

HEADER_NAME = "edge_conv_config.cuh"
# committed next to cuda/edge_conv.cu for a standalone compile (nvcc without the generated header);
# regenerate with ``python -m equitensor.kernels.edge_conv_codegen > cuda/edge_conv_example_config.cuh``
EXAMPLE_HEADER_NAME = "edge_conv_example_config.cuh"
EXAMPLE_CONFIGURATION = ("8x0e+8x1o", "0e+1o+2e+3o", "0e+1o+2e+3o")  # MACE-like: node, SH, target


def _literal(value: float) -> str:
    text = repr(float(value))
    if not any(c in text for c in ".e"):
        text += ".0"
    return f"T({text})"


def _product(terms: list[tuple[float, str, str]]) -> str:
    """``T(c1) * a1 * b1 + T(c2) * a2 * b2 + ...`` for (c, a, b) terms."""
    return " + ".join(f"{_literal(c)} * {a} * {b}" for c, a, b in terms)


def _load_function(name: str, blocks: tuple[Block, ...], comment: str) -> list[str]:
    lines = [
        f"// {comment}",
        "template <typename T>",
        f"__device__ __forceinline__ void {name}(const T* __restrict__ row, const int u,",
        "                                         T* __restrict__ v) {",
    ]
    for b in blocks:
        for m in range(b.dim):
            lines.append(f"  v[{b.slot + m}] = (u < {b.mul}) ? row[{b.offset + m * b.mul} + u] : T(0);")
    lines.append("}")
    return lines


def _store_function(name: str, blocks: tuple[Block, ...], comment: str) -> list[str]:
    lines = [
        f"// {comment}",
        "template <typename T, bool ATOMIC>",
        f"__device__ __forceinline__ void {name}(T* __restrict__ row, const int u,",
        "                                         const T* __restrict__ v) {",
    ]
    for b in blocks:
        if b.mul == 0:
            continue
        lines.append(f"  if (u < {b.mul}) {{")
        for m in range(b.dim):
            lines.append(f"    et_put<T, ATOMIC>(row + {b.offset + m * b.mul} + u, v[{b.slot + m}]);")
        lines.append("  }")
    lines.append("}")
    return lines


def _forward_function(plan: EdgeConvPlan) -> list[str]:
    lines = [
        "// out[k, u] += w[p, u] * sum_ij c_pijk x[i, u] y[j] for every path p (acc: output slots of u)",
        "template <typename T>",
        "__device__ __forceinline__ void et_forward(const T* __restrict__ x, const T* __restrict__ y,",
        "                                           const T* __restrict__ wrow, const int u,",
        "                                           T* __restrict__ acc) {",
    ]
    for index, p in enumerate(plan.paths):
        if not p.nonzeros or p.mul == 0:
            continue
        node, sh, out = plan.node[p.node], plan.sh[p.sh], plan.out[p.out]
        by_k = defaultdict(list)
        for i, j, k, c in p.nonzeros:
            by_k[k].append((c, f"x[{node.slot + i}]", f"y[{sh.offset + j}]"))
        lines += [f"  // path {index}: node block {p.node} (l={node.l}) x sh l={sh.l} -> out block {p.out}"]
        lines += [f"  if (u < {p.mul}) {{", f"    const T w = wrow[{p.weight_offset} + u];"]
        for k, terms in sorted(by_k.items()):
            lines.append(f"    acc[{out.slot + k}] += w * ({_product(terms)});")
        lines.append("  }")
    lines.append("}")
    return lines


def _backward_function(plan: EdgeConvPlan) -> list[str]:
    lines = [
        "// Backward of et_forward for one channel u, given g = d(loss)/d(out) of the receiver:",
        "//   GX: gx[i] += w sum_jk c x..: d/dx (accumulated), GY: gy[j] += (per-lane partial sums),",
        "//   GW: gwrow[p, u] = sum_ijk c x[i] y[j] g[k] (written)",
        "template <typename T, bool GX, bool GY, bool GW>",
        "__device__ __forceinline__ void et_backward(const T* __restrict__ x, const T* __restrict__ y,",
        "                                            const T* __restrict__ wrow, const T* __restrict__ g,",
        "                                            const int u, T* __restrict__ gx, T* __restrict__ gy,",
        "                                            T* __restrict__ gwrow) {",
    ]
    for index, p in enumerate(plan.paths):
        if p.mul == 0:
            continue
        node, sh, out = plan.node[p.node], plan.sh[p.sh], plan.out[p.out]
        lines += [f"  // path {index}: node block {p.node} (l={node.l}) x sh l={sh.l} -> out block {p.out}"]
        lines.append(f"  if (u < {p.mul}) {{")
        if p.nonzeros:
            full = " + ".join(
                f"{_literal(c)} * x[{node.slot + i}] * y[{sh.offset + j}] * g[{out.slot + k}]"
                for i, j, k, c in p.nonzeros
            )
        else:
            full = "T(0)"
        lines.append(f"    if constexpr (GW) gwrow[{p.weight_offset} + u] = {full};")
        if p.nonzeros:
            by_i, by_j = defaultdict(list), defaultdict(list)
            for i, j, k, c in p.nonzeros:
                by_i[i].append((c, f"y[{sh.offset + j}]", f"g[{out.slot + k}]"))
                by_j[j].append((c, f"x[{node.slot + i}]", f"g[{out.slot + k}]"))
            lines += ["    if constexpr (GX || GY) {", f"      const T w = wrow[{p.weight_offset} + u];"]
            for i, terms in sorted(by_i.items()):
                lines.append(f"      if constexpr (GX) gx[{node.slot + i}] += w * ({_product(terms)});")
            for j, terms in sorted(by_j.items()):
                lines.append(f"      if constexpr (GY) gy[{sh.offset + j}] += w * ({_product(terms)});")
            lines.append("    }")
        lines.append("  }")
    lines.append("}")
    return lines


def generate_header(plan: EdgeConvPlan) -> str:
    """The header ``edge_conv_config.cuh`` for ``plan`` (C++17 CUDA, no includes)."""
    sizes = {
        "ET_NODE_DIM": plan.node_dim,
        "ET_SH_DIM": plan.sh_dim,
        "ET_OUT_DIM": plan.out_dim,
        "ET_WEIGHT_NUMEL": plan.weight_numel,
        "ET_MAX_MUL": plan.max_mul,
        "ET_NODE_SLOTS": plan.node_slots,
        "ET_OUT_SLOTS": plan.out_slots,
    }
    lines = [
        "// Generated by equitensor.kernels.edge_conv_codegen for",
        f"//   {plan.irreps_node} x {plan.irreps_sh} -> {plan.irreps_out} ({len(plan.paths)} paths)",
        "// Do not edit: generated from the plan (see equitensor/kernels/edge_conv_codegen.py).",
        "#pragma once",
        "#define ET_GENERATED 1",
        *(f"#define {name} {value}" for name, value in sizes.items()),
        "",
        *_load_function("et_load_node", plan.node, "node row (ir_mul) -> per-channel slots"),
        "",
        *_load_function("et_load_out", plan.out, "output-gradient row (ir_mul) -> per-channel slots"),
        "",
        *_store_function("et_store_out", plan.out, "per-channel output slots -> output row"),
        "",
        *_store_function("et_store_node", plan.node, "per-channel node slots -> node-gradient row"),
        "",
        *_forward_function(plan),
        "",
        *_backward_function(plan),
        "",
    ]
    return "\n".join(lines)


def example_header() -> str:
    """The header of ``EXAMPLE_CONFIGURATION``, committed as ``cuda/edge_conv_example_config.cuh``."""
    from equitensor.tp.edge_convolution import EdgeConvolution  # imports the kernels lazily

    return generate_header(plan_from_key(plan_key(EdgeConvolution(*EXAMPLE_CONFIGURATION).spec)))


if __name__ == "__main__":
    print(example_header(), end="")
