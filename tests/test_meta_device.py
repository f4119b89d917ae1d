"""Device readiness without a GPU: the models and every backend's products run with all their
tensors on the ``meta`` device inside ``single_device("meta")``, which fails any operation that
mixes in a tensor the library created on the CPU (a constant, an index, a buffer not registered),
the way it would fail on a GPU; and a warm call must copy nothing from the host (each copy can
stall a GPU's stream).

Each module first runs on the CPU (filling every constant cache), then moves with ``.to("meta")``:
a cache keyed by dtype but not device, or a constant that ``.to()`` does not reach, shows up here.
"""

import pytest
import torch
from ase.build import bulk, molecule

from equitensor.datasets.atoms_to_graph import graph_from_atoms
from equitensor.graph import batch_graphs
from equitensor.models import MACE, TensorNet
from equitensor.nn import SymmetricContraction
from equitensor.testing import single_device
from equitensor.tp import EdgeConvolution, GauntProduct, list_backends
from tests.test_auto_backend import gaunt_tensor_product

pytestmark = pytest.mark.usefixtures("one_thread")

META = torch.device("meta")
CUTOFF = 4.0
OPTIONS = {"cp": {"rank": "full"}}  # what a backend needs to compute exactly


def two_structures():
    """A rattled periodic Cu cell and a molecule in one batch (so stress and batching both run)."""
    cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    cell.rattle(0.05, seed=1)
    mol = molecule("CH3CH2OH")
    mol.numbers[:] = [28 if z == 8 else 29 for z in mol.numbers]
    return batch_graphs([graph_from_atoms(a, CUTOFF, torch.float64) for a in (cell, mol)])


def small_mace(**options) -> MACE:
    common = dict(r_max=CUTOFF, num_channels=4, max_L=1, max_ell=2, correlation=3, radial_MLP=[8])
    return MACE([28, 29], **{**common, **options})


MODELS = {
    "mace": lambda: small_mace(),
    "mace-sparse": lambda: small_mace(backend="sparse", product_backend="sparse"),
    "mace-so2": lambda: small_mace(backend="so2"),
    "mace-gaunt-product": lambda: small_mace(max_L=2, product_backend="gaunt"),
    "mace-grid-product": lambda: small_mace(max_L=2, product_backend="grid"),
    "tensornet": lambda: TensorNet(
        hidden_channels=4, num_layers=2, num_rbf=6, cutoff=CUTOFF, atomic_numbers=[28, 29], dtype="float64"
    ),
    "tensornet-sparse": lambda: TensorNet(
        hidden_channels=4, num_layers=2, num_rbf=6, cutoff=CUTOFF, atomic_numbers=[28, 29], backend="sparse"
    ),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_energy_forces_stress_and_a_training_step_on_meta(name):
    torch.manual_seed(0)
    model = MODELS[name]().double()
    graph = two_structures()
    on_cpu = model(graph, compute_forces=True, compute_stress=True)  # fills the constant caches
    model = model.to(META)
    graph = graph.to(META)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):  # the first call may build device constants, the second must copy nothing
        with single_device(META) as mode:
            out = model(graph, compute_forces=True, compute_stress=True, training=True)
            loss = out["energy"].square().sum() + out["forces"].square().sum() + out["stress"].square().sum()
            loss.backward()
            optimizer.step()
    assert mode.copies == [], f"host-to-device copies in a warm training step: {mode.copies[:5]}"
    for key in ("energy", "node_energy", "forces", "stress"):
        assert out[key].device == META and out[key].shape == on_cpu[key].shape, key
    gradients = [p.grad for p in model.parameters()]
    assert all(g is not None and g.device == META for g in gradients)
    assert all(p.device == META for p in model.parameters())
    assert all(b.device == META for b in model.buffers())


# ---------------------------------------------------------------- every backend's products


def tensor_product(backend: str):
    # every tensor-product backend computes a Gaunt product exactly
    module = gaunt_tensor_product(backend=backend, backend_options=OPTIONS.get(backend, {}))
    return module, lambda: (torch.randn(5, module.irreps_in1.dim), torch.randn(5, module.irreps_in2.dim))


def gaunt_product(backend: str):
    module = GauntProduct(2, 2, 1, 2, backend=backend)
    return module, lambda: (torch.randn(5, 2 * 9), torch.randn(5, 2 * 4))


def edge_convolution(backend: str):
    for node in ("3x0e+3x1o", "3x0e"):  # the Gaunt backends compute only the scalar-node form
        module = EdgeConvolution(node, "0e+1o+2e", backend="cg")
        limitations = [r for r in list_backends() if r.name == backend][0].limitations(module.spec)
        if not limitations:
            break
    module = EdgeConvolution(node, "0e+1o+2e", backend=backend, **OPTIONS.get(backend, {}))
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0, 2]])

    def inputs():
        return (
            torch.randn(5, module.irreps_node.dim),
            torch.randn(6, 3),
            torch.randn(6, module.weight_numel),
            edge_index,
        )

    return module, inputs


def product_basis(backend: str):
    module = SymmetricContraction("3x0e+3x1o", "3x0e+3x1o", 3, 2, backend=backend)
    elements = torch.tensor([0, 1, 1, 0, 1])
    return module, lambda: (torch.randn(5, 12), torch.nn.functional.one_hot(elements, 2).double())


BUILDERS = {
    "tensor_product": tensor_product,
    "gaunt_product": gaunt_product,
    "edge_convolution": edge_convolution,
    "product_basis": product_basis,
}

# every operation of every backend that claims a GPU and can be built here (``cuda`` needs a GPU
# to build: tests/test_kernels_gpu.py)
CASES = [
    (record.name, operation)
    for record in list_backends()
    if {"cpu", "cuda"} <= set(record.devices)
    for operation in record.operations
]


def test_float64_tables_survive_float_and_to_empty_from_meta():
    model = small_mace(backend="sparse", product_backend="sparse").float().to(META).to_empty(device="cpu")
    tables = [m.coefficients for m in model.modules() if type(m).__name__ == "SparseEdgeProduct"]
    tables += [m.term_ones for m in model.modules() if type(m).__name__ == "SparseProductBasis"]
    assert tables and all(t.dtype == torch.float64 and t.device.type == "cpu" for t in tables)
    assert model.atomic_energies.dtype == torch.float32  # model state follows .to(dtype)


def test_every_gpu_backend_is_covered():
    assert {name for name, _ in CASES} >= {"cg", "sparse", "so2", "cp", "gaunt", "grid"}
    left_out = {record.name for record in list_backends()} - {name for name, _ in CASES}
    assert left_out == {"cuda"}, f"backends the meta-device test does not run: {left_out}"


def _to(value, device):
    return value.to(device) if isinstance(value, torch.Tensor) else value


@pytest.mark.parametrize("backend, operation", CASES)
def test_backend_products_and_two_derivatives_on_meta(backend, operation):
    torch.manual_seed(0)
    module, make_inputs = BUILDERS[operation](backend)
    module = module.double()
    inputs = [x.double() if x.is_floating_point() else x for x in make_inputs()]
    expected = module(*inputs)  # on the CPU first: fills the constant caches
    module = module.to(META)
    inputs = [_to(x, META).requires_grad_(x.is_floating_point()) for x in inputs]
    with single_device(META):
        out = module(*inputs)
        differentiable = [x for x in [*inputs, *module.parameters()] if x.requires_grad]
        grads = torch.autograd.grad(out.square().sum(), differentiable, create_graph=True)
        second = torch.autograd.grad(sum(g.square().sum() for g in grads), differentiable, allow_unused=True)
    assert out.device == META and out.shape == expected.shape
    assert all(g.device == META for g in grads)
    assert any(g is not None for g in second)
