// equitensor::sparse_contract — a multilinear map given by its non-zero coefficients, on CPU.
//
//   out[o(r), t_out, c] += coef[t] * prod_k in_k[i_k(r), t_k, c]     for every row r and term t
//
// Every operand is either channelled, (rows, D, C) with the C channels innermost, or not,
// (rows, D), broadcast over the channels (an input) or summed over them (the output).
// i_k(r) / o(r) are optional row indices (gather / scatter); without one, row r itself.
// `components` (T, K+1) int32 lists each term's component of every input and of the output,
// `coefficients` (T,) float64 its value. The edge convolution (x[sender] Y[edge] w[edge] ->
// receiver) and MACE's product basis (W[element] A A A -> node) are both such maps, and so is
// every derivative of one (the same map with an input and the output swapped), which is how
// the Python side builds derivatives of any order from this one kernel.
//
// Autograd (registered here, in C++, for speed: about 5 us per call instead of ~90 us through
// Python): the gradient for input j is the same op with input j and the output swapped, called
// through the dispatcher, so it is itself differentiable; only the gradients the engine will use
// are computed (needs_input_grad asks the engine, not requires_grad).
//
// Parallel over ranges of output rows, each owned by one thread (no atomics, no races, the
// same summation order whatever the thread count).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int kMaxInputs = 4;

struct Term {
  double coef;
  int64_t offset[kMaxInputs + 1];  // component offset into each input row, then the output row
};

// acc[c] += s * prod_m p[m][c] for c < n (n = W when W > 0, a compile-time width).
template <typename T, int M, int W>
inline void fma_product(T* __restrict__ acc, const T* const* p, T s, int64_t n_runtime) {
  const int64_t n = W > 0 ? W : n_runtime;
  if constexpr (M == 0) {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) acc[c] += s;
  } else if constexpr (M == 1) {
    const T* __restrict__ a = p[0];
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) acc[c] += s * a[c];
  } else if constexpr (M == 2) {
    const T* __restrict__ a = p[0];
    const T* __restrict__ b = p[1];
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) acc[c] += s * a[c] * b[c];
  } else if constexpr (M == 3) {
    const T* __restrict__ a = p[0];
    const T* __restrict__ b = p[1];
    const T* __restrict__ d = p[2];
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) acc[c] += s * a[c] * b[c] * d[c];
  } else {
    const T* __restrict__ a = p[0];
    const T* __restrict__ b = p[1];
    const T* __restrict__ d = p[2];
    const T* __restrict__ e = p[3];
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) acc[c] += s * a[c] * b[c] * d[c] * e[c];
  }
}

struct Operand {
  const void* data;
  int64_t row_stride;
  const int64_t* index;  // nullptr: row r
  bool channelled;
};

// Everything a row needs: operands, which are channelled, the terms sorted by output component
// and the groups of terms that share one (accumulated in registers, stored once).
struct Plan {
  std::vector<Operand> in;
  std::vector<int> channelled, scalar;
  std::vector<Term> terms;
  std::vector<std::pair<int64_t, int64_t>> groups;  // [begin, end) of terms with one output
  int64_t channels;                                   // C (1 when no operand has channels)
  bool direct;  // channelled output, few terms per group: accumulate into the output directly
};

constexpr int kMaxWidth = 128;

// One row r of the loop: every group of terms, all channels.
template <typename T, int M, bool OUT_CHANNELLED, int W>
inline void contract_row(int64_t r, const Plan& plan, T* out_row) {
  const int K = static_cast<int>(plan.in.size());
  const int64_t n = W > 0 ? W : plan.channels;
  const T* base[kMaxInputs];
  const T* p[kMaxInputs];
  for (int k = 0; k < K; ++k) {
    const Operand& op = plan.in[k];
    base[k] = static_cast<const T*>(op.data) + (op.index ? op.index[r] : r) * op.row_stride;
  }
  const int* channelled = plan.channelled.data();
  const int* scalar = plan.scalar.data();
  const int num_scalar = static_cast<int>(plan.scalar.size());
  alignas(64) T acc[W > 0 ? W : kMaxWidth];
  const bool wide = W == 0 && n > kMaxWidth;  // more channels than the register accumulator holds
  for (const auto& [begin, end] : plan.groups) {
    const int64_t out_offset = plan.terms[begin].offset[K];
    // small groups, and wide channelled outputs, accumulate straight into the output; wide
    // channel-summed outputs are reduced term by term below
    T* target = OUT_CHANNELLED && (plan.direct || wide) ? out_row + out_offset : acc;
    if (target == acc && !wide) std::fill(acc, acc + n, T(0));
    for (int64_t t = begin; t < end; ++t) {
      const Term& term = plan.terms[t];
      T s = static_cast<T>(term.coef);
      for (int q = 0; q < num_scalar; ++q) s *= base[scalar[q]][term.offset[scalar[q]]];
      for (int m = 0; m < M; ++m) p[m] = base[channelled[m]] + term.offset[channelled[m]];
      if (wide && !OUT_CHANNELLED) {  // wide and summed: reduce term by term
        T sum = 0;
        T* tmp = acc;
        for (int64_t c0 = 0; c0 < n; c0 += kMaxWidth) {
          const int64_t width = std::min<int64_t>(kMaxWidth, n - c0);
          std::fill(tmp, tmp + width, T(0));
          const T* q[kMaxInputs];
          for (int m = 0; m < M; ++m) q[m] = p[m] + c0;
          fma_product<T, M, 0>(tmp, q, s, width);
          for (int64_t c = 0; c < width; ++c) sum += tmp[c];
        }
        out_row[out_offset] += sum;
        continue;
      }
      fma_product<T, M, W>(target, p, s, n);
    }
    if (target != acc) continue;
    if constexpr (OUT_CHANNELLED) {
      T* __restrict__ o = out_row + out_offset;
#pragma omp simd
      for (int64_t c = 0; c < n; ++c) o[c] += acc[c];
    } else if (!wide) {
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t c = 0; c < n; ++c) sum += acc[c];
      out_row[out_offset] += sum;
    }
  }
}

// Threads own ranges of output rows (so no two write the same row) and zero them first; with a
// scatter index every thread scans all rows and keeps those that land in its range.
template <typename T, int M, bool OUT_CHANNELLED, int W>
void contract(const Plan& plan, T* out, int64_t out_rows, int64_t out_stride, const int64_t* out_index,
              int64_t rows) {
  const int64_t work = rows * static_cast<int64_t>(plan.terms.size()) * plan.channels;
  const int64_t grain = work < (1 << 16) ? std::max<int64_t>(out_rows, 1) : 1;
  at::parallel_for(0, out_rows, grain, [&](int64_t lo, int64_t hi) {
    std::fill(out + lo * out_stride, out + hi * out_stride, T(0));
    if (out_index == nullptr) {
      for (int64_t r = lo; r < hi; ++r) contract_row<T, M, OUT_CHANNELLED, W>(r, plan, out + r * out_stride);
      return;
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t o = out_index[r];
      if (o >= lo && o < hi) contract_row<T, M, OUT_CHANNELLED, W>(r, plan, out + o * out_stride);
    }
  });
}

template <typename T, int M, bool OUT_CHANNELLED>
void dispatch_width(const Plan& plan, T* out, int64_t out_rows, int64_t out_stride, const int64_t* out_index,
                    int64_t rows) {
  switch (plan.channels) {
    case 16:
      return contract<T, M, OUT_CHANNELLED, 16>(plan, out, out_rows, out_stride, out_index, rows);
    case 32:
      return contract<T, M, OUT_CHANNELLED, 32>(plan, out, out_rows, out_stride, out_index, rows);
    case 64:
      return contract<T, M, OUT_CHANNELLED, 64>(plan, out, out_rows, out_stride, out_index, rows);
    case 128:
      return contract<T, M, OUT_CHANNELLED, 128>(plan, out, out_rows, out_stride, out_index, rows);
    default:
      return contract<T, M, OUT_CHANNELLED, 0>(plan, out, out_rows, out_stride, out_index, rows);
  }
}

template <typename T, bool OUT_CHANNELLED>
void dispatch(const Plan& plan, T* out, int64_t out_rows, int64_t out_stride, const int64_t* out_index,
              int64_t rows) {
  switch (plan.channelled.size()) {
    case 0:
      return dispatch_width<T, 0, OUT_CHANNELLED>(plan, out, out_rows, out_stride, out_index, rows);
    case 1:
      return dispatch_width<T, 1, OUT_CHANNELLED>(plan, out, out_rows, out_stride, out_index, rows);
    case 2:
      return dispatch_width<T, 2, OUT_CHANNELLED>(plan, out, out_rows, out_stride, out_index, rows);
    case 3:
      return dispatch_width<T, 3, OUT_CHANNELLED>(plan, out, out_rows, out_stride, out_index, rows);
    default:
      return dispatch_width<T, 4, OUT_CHANNELLED>(plan, out, out_rows, out_stride, out_index, rows);
  }
}

int64_t index_rows(const at::Tensor& index, const char* what) {
  TORCH_CHECK(index.dim() == 1 && index.scalar_type() == at::kLong && index.is_contiguous(),
              "sparse_contract: ", what, " must be a contiguous 1-D int64 tensor, got ", index.scalar_type(),
              " of shape ", index.sizes());
  return index.size(0);
}

at::Tensor sparse_contract(at::TensorList inputs, const c10::List<std::optional<at::Tensor>>& indices,
                           const std::optional<at::Tensor>& out_index, int64_t out_rows, int64_t out_dim,
                           int64_t channels, const at::Tensor& components, const at::Tensor& coefficients) {
  const int K = static_cast<int>(inputs.size());
  TORCH_CHECK(K >= 1 && K <= kMaxInputs, "sparse_contract: 1 to ", kMaxInputs, " inputs, got ", K);
  TORCH_CHECK(static_cast<int>(indices.size()) == K, "sparse_contract: one index (or None) per input");
  TORCH_CHECK(components.dim() == 2 && components.size(1) == K + 1 && components.scalar_type() == at::kInt,
              "sparse_contract: components must be int32 (terms, inputs + 1), got ", components.sizes());
  TORCH_CHECK(coefficients.dim() == 1 && coefficients.size(0) == components.size(0) &&
                  coefficients.scalar_type() == at::kDouble,
              "sparse_contract: coefficients must be float64 (terms,)");
  const auto dtype = inputs[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "sparse_contract: float32 or float64, got ", dtype);

  // rows of the loop: from an index, else from the rows of an unindexed operand
  int64_t rows = -1;
  auto agree = [&](int64_t n, const char* what) {
    TORCH_CHECK(rows < 0 || rows == n, "sparse_contract: ", what, " has ", n, " rows, expected ", rows);
    rows = n;
  };
  std::vector<Operand> operands(K);
  std::vector<int> channelled, scalar;
  std::vector<int64_t> dims(K);
  for (int k = 0; k < K; ++k) {
    const at::Tensor& x = inputs[k];
    TORCH_CHECK(x.scalar_type() == dtype && x.device().is_cpu() && x.is_contiguous(),
                "sparse_contract: input ", k, " must be a contiguous CPU tensor of ", dtype);
    TORCH_CHECK(x.dim() == 2 || x.dim() == 3, "sparse_contract: input ", k, " must be (rows, D) or (rows, D, C)");
    const bool has_channels = x.dim() == 3;
    if (has_channels) {
      TORCH_CHECK(channels == 0 || x.size(2) == channels || channels < 0, "sparse_contract: input ", k, " has ",
                  x.size(2), " channels, expected ", channels);
      channelled.push_back(k);
    } else {
      scalar.push_back(k);
    }
    dims[k] = x.size(1);
    const std::optional<at::Tensor> index = indices.get(k);
    const int64_t* index_data = nullptr;
    if (index.has_value()) {
      agree(index_rows(*index, "an input index"), "an input index");
      index_data = index->data_ptr<int64_t>();
    } else {
      agree(x.size(0), "an unindexed input");
    }
    operands[k] = {x.data_ptr(), x.stride(0), index_data, has_channels};
  }
  int64_t num_channels = 1;
  for (int k : channelled) num_channels = inputs[k].size(2);
  for (int k : channelled)
    TORCH_CHECK(inputs[k].size(2) == num_channels, "sparse_contract: inputs have different channel counts");
  TORCH_CHECK(channels == 0 || channelled.empty() || channels == num_channels,
              "sparse_contract: output channels ", channels, " differ from the inputs' ", num_channels);
  if (channels > 0) num_channels = channels;
  const bool out_channelled = channels > 0;
  const int64_t* out_index_data = nullptr;
  if (out_index.has_value()) {
    agree(index_rows(*out_index, "out_index"), "out_index");
    out_index_data = out_index->data_ptr<int64_t>();
  } else {
    agree(out_rows, "the output");
  }
  if (rows <= 0) {  // nothing to sum (e.g. a structure without edges): an all-zero output
    return out_channelled ? at::zeros({out_rows, out_dim, num_channels}, inputs[0].options())
                          : at::zeros({out_rows, out_dim}, inputs[0].options());
  }

  // terms with their component offsets, checked against the operands' sizes
  const int64_t T = components.size(0);
  const auto comp = components.contiguous();
  const int32_t* cdata = comp.data_ptr<int32_t>();
  const double* coef = coefficients.contiguous().data_ptr<double>();
  std::vector<Term> terms(T);
  for (int64_t t = 0; t < T; ++t) {
    terms[t].coef = coef[t];
    for (int k = 0; k <= K; ++k) {
      const int64_t i = cdata[t * (K + 1) + k];
      const int64_t dim = k < K ? dims[k] : out_dim;
      TORCH_CHECK(i >= 0 && i < dim, "sparse_contract: term ", t, " component ", i, " out of range ", dim);
      const bool ch = k < K ? operands[k].channelled : out_channelled;
      terms[t].offset[k] = ch ? i * num_channels : i;
    }
  }
  auto check_index = [&](const int64_t* index, int64_t limit, const char* what) {
    if (index == nullptr) return;
    for (int64_t r = 0; r < rows; ++r)
      TORCH_CHECK(index[r] >= 0 && index[r] < limit, "sparse_contract: ", what, " ", index[r],
                  " out of range ", limit);
  };
  for (int k = 0; k < K; ++k) check_index(operands[k].index, inputs[k].size(0), "input row");
  check_index(out_index_data, out_rows, "output row");

  // terms sorted by output component (stable), grouped: each group is summed in registers
  std::stable_sort(terms.begin(), terms.end(),
                   [K](const Term& a, const Term& b) { return a.offset[K] < b.offset[K]; });
  Plan plan{operands, channelled, scalar, std::move(terms), {}, 1, false};
  for (int64_t t = 0; t < T; ++t)
    if (t == 0 || plan.terms[t].offset[K] != plan.terms[t - 1].offset[K]) plan.groups.push_back({t, t + 1});
    else plan.groups.back().second = t + 1;
  plan.channels = (channelled.empty() && !out_channelled) ? 1 : num_channels;
  // a register accumulator pays for its zeroing and final store from about 4 terms per group
  plan.direct = out_channelled && T < 4 * static_cast<int64_t>(plan.groups.size());

  // zeroed by the threads that own the rows (first touch where they are used)
  auto out = out_channelled ? at::empty({out_rows, out_dim, num_channels}, inputs[0].options())
                            : at::empty({out_rows, out_dim}, inputs[0].options());
  const int64_t out_stride = out.stride(0);
  AT_DISPATCH_FLOATING_TYPES(dtype, "sparse_contract", [&] {
    if (out_channelled) {
      dispatch<scalar_t, true>(plan, out.data_ptr<scalar_t>(), out_rows, out_stride, out_index_data, rows);
    } else {
      dispatch<scalar_t, false>(plan, out.data_ptr<scalar_t>(), out_rows, out_stride, out_index_data, rows);
    }
  });
  return out;
}

// the schema's out_rows is a SymInt (dynamic numbers of atoms and edges in torch.export); the
// CPU kernel runs on concrete sizes
at::Tensor sparse_contract_cpu(at::TensorList inputs, const c10::List<std::optional<at::Tensor>>& indices,
                               const std::optional<at::Tensor>& out_index, c10::SymInt out_rows, int64_t out_dim,
                               int64_t channels, const at::Tensor& components, const at::Tensor& coefficients) {
  return sparse_contract(inputs, indices, out_index, out_rows.expect_int(), out_dim, channels, components,
                         coefficients);
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor call_op(at::TensorList inputs, const c10::List<std::optional<at::Tensor>>& indices,
                   const std::optional<at::Tensor>& out_index, c10::SymInt out_rows, int64_t out_dim,
                   int64_t channels, const at::Tensor& components, const at::Tensor& coefficients) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("equitensor::sparse_contract", "")
                       .typed<decltype(sparse_contract_cpu)>();
  return op.call(inputs, indices, out_index, out_rows, out_dim, channels, components, coefficients);
}

class SparseContractFunction : public torch::autograd::Function<SparseContractFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, at::TensorList inputs,
                            const c10::List<std::optional<at::Tensor>>& indices,
                            const std::optional<at::Tensor>& out_index, c10::SymInt out_rows, int64_t out_dim,
                            int64_t channels, const at::Tensor& components, const at::Tensor& coefficients) {
    ctx->save_for_backward(inputs.vec());
    ctx->saved_data["indices"] = indices;
    ctx->saved_data["out_index"] = out_index;
    ctx->saved_data["components"] = components;
    ctx->saved_data["coefficients"] = coefficients;
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_op(inputs, indices, out_index, out_rows, out_dim, channels, components, coefficients);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list inputs = ctx->get_saved_variables();
    const int K = static_cast<int>(inputs.size());
    const auto indices = ctx->saved_data["indices"].to<c10::List<std::optional<at::Tensor>>>();
    const auto out_index = ctx->saved_data["out_index"].toOptional<at::Tensor>();
    const at::Tensor components = ctx->saved_data["components"].toTensor();
    const at::Tensor coefficients = ctx->saved_data["coefficients"].toTensor();
    const at::Tensor grad = grad_outputs[0].contiguous();
    // one gradient slot per forward argument: K inputs, indices, out_index, three ints,
    // components, coefficients (all but the inputs' stay undefined)
    variable_list grads(K + 7);
    for (int j = 0; j < K; ++j) {
      if (!ctx->needs_input_grad(j)) continue;
      std::vector<at::Tensor> operands;
      c10::List<std::optional<at::Tensor>> rows;
      std::vector<int64_t> order;
      for (int k = 0; k < K; ++k) {
        if (k == j) continue;
        operands.push_back(inputs[k]);
        rows.push_back(indices.get(k));
        order.push_back(k);
      }
      operands.push_back(grad);
      rows.push_back(out_index);
      order.push_back(K);
      order.push_back(j);
      // the term table's columns in the new operand order, on the table's own device (no host copy)
      std::vector<at::Tensor> picked;
      for (const int64_t k : order) picked.push_back(components.select(1, k));
      const at::Tensor columns = at::stack(picked, 1).contiguous();
      const at::Tensor& target = inputs[j];
      // sym_size: under torch.export the row count is symbolic (size() would specialise it)
      const int64_t dim = target.sym_size(1).guard_int(__FILE__, __LINE__);
      const int64_t channels = target.dim() == 3 ? target.sym_size(2).guard_int(__FILE__, __LINE__) : 0;
      grads[j] = call_op(operands, rows, indices.get(j), target.sym_size(0), dim, channels, columns, coefficients);
    }
    return grads;
  }
};

at::Tensor sparse_contract_autograd(at::TensorList inputs, const c10::List<std::optional<at::Tensor>>& indices,
                                    const std::optional<at::Tensor>& out_index, c10::SymInt out_rows, int64_t out_dim,
                                    int64_t channels, const at::Tensor& components,
                                    const at::Tensor& coefficients) {
  return SparseContractFunction::apply(inputs, indices, out_index, out_rows, out_dim, channels, components,
                                       coefficients);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(equitensor, m) {
  m.def(
      "sparse_contract(Tensor[] inputs, Tensor?[] indices, Tensor? out_index, SymInt out_rows, int out_dim, "
      "int channels, Tensor components, Tensor coefficients) -> Tensor");
}

TORCH_LIBRARY_IMPL(equitensor, CPU, m) { m.impl("sparse_contract", &sparse_contract_cpu); }

TORCH_LIBRARY_IMPL(equitensor, Autograd, m) { m.impl("sparse_contract", &sparse_contract_autograd); }
