"""torch-geometric views of our graphs and data sets (needs torch-geometric: run in CI in the
torchmd-net environment, which has it; skipped elsewhere)."""

import pytest
import torch
from train_helpers import emt_frames

pyg = pytest.importorskip("torch_geometric", reason="torch-geometric is not installed")
from torch_geometric.loader import DataLoader  # noqa: E402

from equitensor.datasets import GraphDataset, collate_graphs, read_structures  # noqa: E402
from equitensor.graph import as_atomic_graph  # noqa: E402
from equitensor.interop.pyg import LABEL_FIELDS, PyGDataset, from_pyg, to_pyg  # noqa: E402
from equitensor.models import MACE, TensorNet  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    import ase.io

    path = tmp_path_factory.mktemp("pyg") / "frames.xyz"
    ase.io.write(path, emt_frames(5, seed=3), format="extxyz")  # 2 isolated atoms, 5 cells
    return GraphDataset(read_structures(path), r_max=3.0)


def test_round_trip_of_a_batch_with_labels(dataset):
    batch = collate_graphs([dataset[i] for i in range(len(dataset))])
    data = to_pyg(batch.graph, batch.labels)
    assert isinstance(data, pyg.data.Batch) and data.num_graphs == batch.graph.num_graphs
    back = from_pyg(data)
    for name in ("positions", "numbers", "edge_index", "unit_shifts", "cell", "pbc", "batch"):
        assert torch.equal(getattr(back, name), getattr(batch.graph, name)), name
    for name in LABEL_FIELDS:
        assert torch.equal(data[name], getattr(batch.labels, name)), name
    single = to_pyg(dataset[3].graph)
    assert isinstance(single, pyg.data.Data) and as_atomic_graph(single).num_graphs == 1


@pytest.mark.parametrize("model_name", ["mace", "tensornet"])
def test_models_take_pyg_batches_from_a_pyg_loader(dataset, model_name):
    torch.manual_seed(0)
    if model_name == "mace":
        model = MACE([28, 29], r_max=3.0, num_channels=4, max_L=1, max_ell=1, radial_MLP=[8]).double()
    else:
        model = TensorNet(
            hidden_channels=4, num_layers=1, num_rbf=4, cutoff=3.0, atomic_numbers=[28, 29], dtype="float64"
        )
    loader = DataLoader(PyGDataset(dataset), batch_size=3, shuffle=False)
    ours = [
        collate_graphs([dataset[i] for i in range(s, min(s + 3, len(dataset)))])
        for s in range(0, len(dataset), 3)
    ]
    for data, reference in zip(loader, ours, strict=True):
        out = model(data, compute_stress=True)
        expected = model(reference.graph, compute_stress=True)
        for key in ("energy", "forces", "stress"):
            torch.testing.assert_close(out[key], expected[key], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(data.energy, reference.labels.energy)


def test_a_wrong_object_is_a_named_error():
    with pytest.raises(TypeError, match="lacks"):
        as_atomic_graph(pyg.data.Data(pos=torch.zeros(2, 3)))
