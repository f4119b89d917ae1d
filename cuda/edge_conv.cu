// Fused edge convolution: out[r] = sum_{edges e: s -> r} TP_uvu(x[s], Y[e], w[e]).
//
// Compiled at run time by equitensor.kernels (NVRTC) with
//   -DET_SCALAR=float|double -DET_GENERATED_CONFIG  and the generated header edge_conv_config.cuh
// (sizes, per-channel unrolled products with the CG constants as literals; see
// equitensor/kernels/edge_conv_codegen.py). No standard headers: NVRTC has none.
// Compiled on its own (nvcc cuda/edge_conv.cu) it takes float and the committed example
// configuration edge_conv_example_config.cuh, so the file always compiles as it stands.
//
// Layout: node features, outputs and their gradients are ir_mul (element (m, u) of a block at
// offset + m * mul + u); SH rows are (E, ET_SH_DIM); weights (E, ET_WEIGHT_NUMEL) in the
// TensorProduct layout (path p, channel u at weight_offset_p + u).
//
// Work split: one warp per item (receiver node, sender node or edge), lane = channel u (channels
// >= 32 loop with stride 32). Blocks are (32, ET_WARPS) threads. No per-edge message is written.
//
// Kernels (ET_SCALAR instantiations, extern "C"):
//   et_fwd_csr        deterministic forward: warp per receiver, edges of the receiver in CSR
//                     order (recv_ptr, recv_perm), sum in registers, no atomics, writes every row.
//   et_fwd_atomic     forward: warp per edge, atomicAdd into the receiver's row (out zeroed).
//   et_bwd_edge_XYZ   backward per edge: X=1 adds d/dx into the sender with atomics, Y=1 writes
//                     d/dY[e] (warp reduction over channels, fixed order), Z=1 writes d/dw[e].
//   et_bwd_x_csr      deterministic d/dx: warp per sender, its edges in CSR order (send_ptr,
//                     send_perm), no atomics, writes every row.
// Index tensors are int64. Row offsets are computed in 64 bits (E * ET_WEIGHT_NUMEL > 2^31).

#ifndef ET_SCALAR
#define ET_SCALAR float  // equitensor.kernels always passes float or double
#endif

#define ET_WARP 32
#ifndef ET_WARPS
#define ET_WARPS 4  // warps (items) per block; equitensor.kernels passes -DET_WARPS
#endif
#define ET_MAX1(n) ((n) > 0 ? (n) : 1)

typedef long long et_index;

template <typename T, bool ATOMIC>
__device__ __forceinline__ void et_put(T* address, const T value) {
  if constexpr (ATOMIC) {
    atomicAdd(address, value);
  } else {
    *address = value;
  }
}

// the generated per-configuration part: sizes and unrolled per-channel products (uses et_put)
#ifdef ET_GENERATED_CONFIG
#include "edge_conv_config.cuh"
#else
#include "edge_conv_example_config.cuh"
#endif

#ifndef ET_GENERATED
#error "edge_conv.cu needs the generated header edge_conv_config.cuh"
#endif

template <typename T>
__device__ __forceinline__ void et_load_sh(const T* __restrict__ row, T* __restrict__ y) {
#pragma unroll
  for (int j = 0; j < ET_SH_DIM; ++j) y[j] = row[j];
}

template <typename T>
__device__ __forceinline__ T et_warp_sum(T value) {
  // butterfly: every lane ends with the same sum, combined in a fixed order (deterministic)
#pragma unroll
  for (int offset = ET_WARP / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

__device__ __forceinline__ et_index et_item() {
  return (et_index)blockIdx.x * ET_WARPS + threadIdx.y;
}

template <typename T>
__device__ void et_fwd_csr(const T* __restrict__ x, const T* __restrict__ sh, const T* __restrict__ w,
                           const et_index* __restrict__ senders, const et_index* __restrict__ recv_ptr,
                           const et_index* __restrict__ recv_perm, T* __restrict__ out, const et_index num_nodes) {
  const et_index node = et_item();
  if (node >= num_nodes) return;
  const et_index begin = recv_ptr[node], end = recv_ptr[node + 1];
  for (int u = threadIdx.x; u < ET_MAX_MUL; u += ET_WARP) {
    T acc[ET_MAX1(ET_OUT_SLOTS)] = {};
    for (et_index q = begin; q < end; ++q) {
      const et_index e = recv_perm[q];
      const et_index s = senders[e];
      T xv[ET_MAX1(ET_NODE_SLOTS)];
      T yv[ET_MAX1(ET_SH_DIM)];
      et_load_node<T>(x + s * ET_NODE_DIM, u, xv);
      et_load_sh<T>(sh + e * ET_SH_DIM, yv);
      et_forward<T>(xv, yv, w + e * ET_WEIGHT_NUMEL, u, acc);
    }
    et_store_out<T, false>(out + node * ET_OUT_DIM, u, acc);
  }
}

template <typename T>
__device__ void et_fwd_atomic(const T* __restrict__ x, const T* __restrict__ sh, const T* __restrict__ w,
                              const et_index* __restrict__ senders, const et_index* __restrict__ receivers,
                              T* __restrict__ out, const et_index num_edges) {
  const et_index e = et_item();
  if (e >= num_edges) return;
  const et_index s = senders[e], r = receivers[e];
  T yv[ET_MAX1(ET_SH_DIM)];
  et_load_sh<T>(sh + e * ET_SH_DIM, yv);
  for (int u = threadIdx.x; u < ET_MAX_MUL; u += ET_WARP) {
    T acc[ET_MAX1(ET_OUT_SLOTS)] = {};
    T xv[ET_MAX1(ET_NODE_SLOTS)];
    et_load_node<T>(x + s * ET_NODE_DIM, u, xv);
    et_forward<T>(xv, yv, w + e * ET_WEIGHT_NUMEL, u, acc);
    et_store_out<T, true>(out + r * ET_OUT_DIM, u, acc);
  }
}

template <typename T, bool GX, bool GY, bool GW>
__device__ void et_bwd_edge(const T* __restrict__ x, const T* __restrict__ sh, const T* __restrict__ w,
                            const T* __restrict__ grad_out, const et_index* __restrict__ senders,
                            const et_index* __restrict__ receivers, T* __restrict__ grad_x,
                            T* __restrict__ grad_sh, T* __restrict__ grad_w, const et_index num_edges) {
  const et_index e = et_item();
  if (e >= num_edges) return;  // warp-uniform: a warp is one threadIdx.y
  const et_index s = senders[e], r = receivers[e];
  T yv[ET_MAX1(ET_SH_DIM)];
  et_load_sh<T>(sh + e * ET_SH_DIM, yv);
  T gy[ET_MAX1(ET_SH_DIM)] = {};
  for (int u = threadIdx.x; u < ET_MAX_MUL; u += ET_WARP) {
    T xv[ET_MAX1(ET_NODE_SLOTS)] = {};
    T gv[ET_MAX1(ET_OUT_SLOTS)];
    T gx[ET_MAX1(ET_NODE_SLOTS)] = {};
    if constexpr (GY || GW) et_load_node<T>(x + s * ET_NODE_DIM, u, xv);
    et_load_out<T>(grad_out + r * ET_OUT_DIM, u, gv);
    et_backward<T, GX, GY, GW>(xv, yv, w + e * ET_WEIGHT_NUMEL, gv, u, gx, gy,
                               GW ? grad_w + e * ET_WEIGHT_NUMEL : grad_w);
    if constexpr (GX) et_store_node<T, true>(grad_x + s * ET_NODE_DIM, u, gx);
  }
  if constexpr (GY) {
#pragma unroll
    for (int j = 0; j < ET_SH_DIM; ++j) {
      const T total = et_warp_sum<T>(gy[j]);
      if (threadIdx.x == 0) grad_sh[e * ET_SH_DIM + j] = total;
    }
  }
}

template <typename T>
__device__ void et_bwd_x_csr(const T* __restrict__ sh, const T* __restrict__ w, const T* __restrict__ grad_out,
                             const et_index* __restrict__ receivers, const et_index* __restrict__ send_ptr,
                             const et_index* __restrict__ send_perm, T* __restrict__ grad_x,
                             const et_index num_nodes) {
  const et_index node = et_item();
  if (node >= num_nodes) return;
  const et_index begin = send_ptr[node], end = send_ptr[node + 1];
  for (int u = threadIdx.x; u < ET_MAX_MUL; u += ET_WARP) {
    T gx[ET_MAX1(ET_NODE_SLOTS)] = {};
    for (et_index q = begin; q < end; ++q) {
      const et_index e = send_perm[q];
      const et_index r = receivers[e];
      T yv[ET_MAX1(ET_SH_DIM)];
      T gv[ET_MAX1(ET_OUT_SLOTS)];
      et_load_sh<T>(sh + e * ET_SH_DIM, yv);
      et_load_out<T>(grad_out + r * ET_OUT_DIM, u, gv);
      et_backward<T, true, false, false>(nullptr, yv, w + e * ET_WEIGHT_NUMEL, gv, u, gx, nullptr, nullptr);
    }
    et_store_node<T, false>(grad_x + node * ET_NODE_DIM, u, gx);
  }
}

// ---- entry points for ET_SCALAR -------------------------------------------------------------

#define ET_LAUNCH_BOUNDS __launch_bounds__(ET_WARP * ET_WARPS)

extern "C" __global__ void ET_LAUNCH_BOUNDS et_fwd_csr_kernel(
    const ET_SCALAR* x, const ET_SCALAR* sh, const ET_SCALAR* w, const et_index* senders,
    const et_index* recv_ptr, const et_index* recv_perm, ET_SCALAR* out, const et_index num_nodes) {
  et_fwd_csr<ET_SCALAR>(x, sh, w, senders, recv_ptr, recv_perm, out, num_nodes);
}

extern "C" __global__ void ET_LAUNCH_BOUNDS et_fwd_atomic_kernel(
    const ET_SCALAR* x, const ET_SCALAR* sh, const ET_SCALAR* w, const et_index* senders,
    const et_index* receivers, ET_SCALAR* out, const et_index num_edges) {
  et_fwd_atomic<ET_SCALAR>(x, sh, w, senders, receivers, out, num_edges);
}

extern "C" __global__ void ET_LAUNCH_BOUNDS et_bwd_x_csr_kernel(
    const ET_SCALAR* sh, const ET_SCALAR* w, const ET_SCALAR* grad_out, const et_index* receivers,
    const et_index* send_ptr, const et_index* send_perm, ET_SCALAR* grad_x, const et_index num_nodes) {
  et_bwd_x_csr<ET_SCALAR>(sh, w, grad_out, receivers, send_ptr, send_perm, grad_x, num_nodes);
}

#define ET_BWD_EDGE(GX, GY, GW)                                                                      \
  extern "C" __global__ void ET_LAUNCH_BOUNDS et_bwd_edge_##GX##GY##GW##_kernel(                     \
      const ET_SCALAR* x, const ET_SCALAR* sh, const ET_SCALAR* w, const ET_SCALAR* grad_out,        \
      const et_index* senders, const et_index* receivers, ET_SCALAR* grad_x, ET_SCALAR* grad_sh,     \
      ET_SCALAR* grad_w, const et_index num_edges) {                                                 \
    et_bwd_edge<ET_SCALAR, (GX) != 0, (GY) != 0, (GW) != 0>(x, sh, w, grad_out, senders, receivers,   \
                                                          grad_x, grad_sh, grad_w, num_edges);     \
  }

ET_BWD_EDGE(1, 0, 0)
ET_BWD_EDGE(0, 1, 0)
ET_BWD_EDGE(0, 0, 1)
ET_BWD_EDGE(1, 1, 0)
ET_BWD_EDGE(1, 0, 1)
ET_BWD_EDGE(0, 1, 1)
ET_BWD_EDGE(1, 1, 1)
