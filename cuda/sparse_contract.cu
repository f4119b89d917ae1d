// equitensor::sparse_contract on CUDA: a multilinear map given by its non-zero coefficients,
//
//   out[o(r), t_out, c] = sum_{rows r, terms t} coef[t] * prod_k in_k[i_k(r), t_k, c]
//
// the same formulation as the CPU kernel (equitensor/kernels/sparse_contract.cpp), so MACE's
// product basis (W[element] A A A -> node), its edge convolution (x[sender] Y w -> receiver) and
// every derivative of either (the same map with an input and the output swapped) run on it.
// The host side (equitensor/kernels/sparse_contract_cuda.py) sorts the terms by output
// component and the rows by output row (both as CSR offsets, no synchronisation) and launches.
//
// One thread per output element (output row o, output component g, channel c; channels
// innermost so a warp reads consecutive channels): it sums its own terms over its own rows in a
// fixed order and writes once. No atomics: deterministic, and every output element is written
// (components without terms get 0). An output without channels (summed over them) gets one
// thread per (o, g) that loops over the channels.
//
// Compiled at run time by equitensor.kernels (NVRTC) with -DET_SCALAR=float|double; compiled on
// its own (nvcc -c cuda/sparse_contract.cu) it takes float. With -DET_HOST_EMULATION g++
// compiles it for the CPU, with a loop over blocks and threads in place of the launch
// (tests/test_cuda_compile.py runs MACE's calls through it against the CPU kernel).

#ifndef ET_SCALAR
#define ET_SCALAR float  // equitensor.kernels always passes float or double
#endif

typedef ET_SCALAR et_scalar;
typedef long long et_index;

#define ET_MAX_INPUTS 4

#ifdef ET_HOST_EMULATION
struct et_dim3 {
  unsigned x, y, z;
};
static et_dim3 blockIdx, blockDim, threadIdx;
#define __global__
#endif

// s0..s3: row stride of each input; c0..c3: 1 if the input has channels, else 0 (scalars, so no
// host-to-device copy per call). term_offsets: (terms, ET_MAX_INPUTS) offset of each term's component in each input's row.
// group_start: (groups + 1,) terms of output component g are [group_start[g], group_start[g+1]).
// row_start / row_order: the rows r with o(r) = o are row_order[row_start[o] .. row_start[o+1]);
// null pointers: row o alone (no scatter).
extern "C" __global__ void et_sparse_contract_kernel(
    const et_scalar* __restrict__ in0, const et_scalar* __restrict__ in1, const et_scalar* __restrict__ in2,
    const et_scalar* __restrict__ in3, const et_index* idx0, const et_index* idx1, const et_index* idx2,
    const et_index* idx3, const et_index* __restrict__ term_offsets, const double* __restrict__ coefficients,
    const et_index* __restrict__ group_start, const et_index* __restrict__ row_start,
    const et_index* __restrict__ row_order, et_scalar* __restrict__ out, const et_index s0, const et_index s1,
    const et_index s2, const et_index s3, const et_index c0, const et_index c1, const et_index c2,
    const et_index c3, const et_index num_inputs, const et_index out_rows, const et_index groups,
    const et_index channels, const et_index out_channelled) {
  const et_index lanes = out_channelled ? channels : 1;
  const et_index id = (et_index)blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= out_rows * groups * lanes) return;
  const et_index lane = id % lanes;
  const et_index g = (id / lanes) % groups;
  const et_index o = id / (lanes * groups);
  const et_index c_begin = out_channelled ? lane : 0;
  const et_index c_end = out_channelled ? lane + 1 : channels;

  const et_scalar* in[ET_MAX_INPUTS] = {in0, in1, in2, in3};
  const et_index* idx[ET_MAX_INPUTS] = {idx0, idx1, idx2, idx3};
  const et_index stride[ET_MAX_INPUTS] = {s0, s1, s2, s3};
  const et_index step[ET_MAX_INPUTS] = {c0, c1, c2, c3};
  const et_index s_begin = row_start ? row_start[o] : o;
  const et_index s_end = row_start ? row_start[o + 1] : o + 1;
  const et_index t_begin = group_start[g], t_end = group_start[g + 1];

  et_scalar acc = 0;
  for (et_index s = s_begin; s < s_end; ++s) {
    const et_index r = row_order ? row_order[s] : s;
    const et_scalar* base[ET_MAX_INPUTS];
    for (int k = 0; k < num_inputs; ++k) base[k] = in[k] + (idx[k] ? idx[k][r] : r) * stride[k];
    for (et_index t = t_begin; t < t_end; ++t) {
      const et_index* offset = term_offsets + t * ET_MAX_INPUTS;
      const et_scalar coef = (et_scalar)coefficients[t];
      for (et_index c = c_begin; c < c_end; ++c) {
        et_scalar product = coef;
        for (int k = 0; k < num_inputs; ++k) product *= base[k][offset[k] + c * step[k]];
        acc += product;
      }
    }
  }
  out[id] = acc;  // (out_rows, groups[, channels]) contiguous: the thread's own element
}

#ifdef ET_HOST_EMULATION
// The launch, emulated: every block and thread in turn (same arguments, plus grid and block).
extern "C" void et_sparse_contract_host(
    const et_scalar* in0, const et_scalar* in1, const et_scalar* in2, const et_scalar* in3, const et_index* idx0,
    const et_index* idx1, const et_index* idx2, const et_index* idx3, const et_index* term_offsets,
    const double* coefficients, const et_index* group_start, const et_index* row_start, const et_index* row_order,
    et_scalar* out, et_index s0, et_index s1, et_index s2, et_index s3, et_index c0, et_index c1, et_index c2,
    et_index c3, et_index num_inputs, et_index out_rows, et_index groups, et_index channels,
    et_index out_channelled, et_index grid, et_index block) {
  blockDim.x = (unsigned)block;
  for (et_index b = 0; b < grid; ++b) {
    blockIdx.x = (unsigned)b;
    for (et_index t = 0; t < block; ++t) {
      threadIdx.x = (unsigned)t;
      et_sparse_contract_kernel(in0, in1, in2, in3, idx0, idx1, idx2, idx3, term_offsets, coefficients,
                                group_start, row_start, row_order, out, s0, s1, s2, s3, c0, c1, c2, c3,
                                num_inputs, out_rows, groups, channels, out_channelled);
    }
  }
}
#endif
