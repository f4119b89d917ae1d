"""Training config: YAML loading, dotted overrides, and errors that name the problem."""

import pytest

from equitensor.train.config import QUICKSTART, ConfigError, TrainConfig, apply_overrides, load_config


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_short_yaml_gets_defaults(tmp_path):
    path = write(tmp_path, "model: mace\ntrain_file: data.xyz\nr_max: 5\nepochs: 20\n")
    config = load_config(path)
    assert config.model == "mace" and config.train_file == "data.xyz" and config.epochs == 20
    assert config.r_max == 5.0 and isinstance(config.r_max, float)
    assert config.name == "run"  # from the file name
    defaults = TrainConfig()
    assert config.forces_weight == defaults.forces_weight and config.ema == defaults.ema


def test_overrides_parse_yaml_values_and_dotted_keys(tmp_path):
    path = write(tmp_path, "model: mace\nmodel_kwargs: {num_channels: 8}\n")
    config = load_config(
        path,
        [
            "epochs=3",
            "lr=1e-3",
            "model_kwargs.max_L=2",
            "e0s={29: -1.5, Ni: -2}",
            "clip_grad=null",
            "plots=false",
        ],
    )
    assert config.epochs == 3 and config.lr == 1e-3
    assert config.model_kwargs == {"num_channels": 8, "max_L": 2}
    assert config.e0s == {29: -1.5, "Ni": -2}
    assert config.clip_grad is None and config.plots is False


def test_apply_overrides_does_not_modify_input():
    values = {"model_kwargs": {"a": 1}}
    result = apply_overrides(values, ["model_kwargs.b=2"])
    assert values == {"model_kwargs": {"a": 1}} and result["model_kwargs"] == {"a": 1, "b": 2}


def test_unknown_key_names_it_and_the_valid_keys(tmp_path):
    path = write(tmp_path, "model: mace\nepoch: 3\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "'epoch'" in message and "did you mean 'epochs'" in message
    assert "valid keys:" in message and "forces_weight" in message


def test_unknown_override_key(tmp_path):
    with pytest.raises(ConfigError, match="'learning_rate'"):
        load_config(write(tmp_path, "model: mace\n"), ["learning_rate=0.1"])


@pytest.mark.parametrize(
    "text, match",
    [
        ("epochs: many\n", "epochs must be int"),
        ("epochs: true\n", "epochs must be int"),
        ("model: nequip\n", "model must be one of mace, tdn, escn, facet, tensornet"),
        ("loss: l1\n", "loss must be one of mse, huber"),
        ("lr: -1\n", "lr must be > 0"),
        ("valid_fraction: 1.5\n", r"valid_fraction must be in \[0, 1\)"),
        ("valid_fraction: 0\n", "give valid_file or a valid_fraction > 0"),
        ("e0s: guess\n", "e0s must be one of auto, isolated, least_squares"),
        ("energy_weight: 0\nforces_weight: 0\n", "nothing to fit"),
        (
            "model: tensornet\nbackend: so2\n",
            "TensorNet's backend .* must be one of torch, sparse, got 'so2'",
        ),
        ("- a\n- b\n", "expected a mapping"),
        ("freeze: embedding.*\n", "freeze must be list or null, got 'embedding.\\*'"),
        ("model_kwargs: [1]\n", "model_kwargs must be dict"),
        ("model: [unclosed\n", "not valid YAML"),
        ("forces_weight: .nan\n", "forces_weight must be finite"),
        ("energy_weight: .inf\n", "energy_weight must be finite"),
        ("r_max: .inf\n", "r_max must be finite"),
        ("lr: -.inf\n", "lr must be finite"),
        ("model_kwargs:\n  scale: .nan\n", r"model_kwargs\.scale must be finite"),
        ("e0s:\n  1: .inf\n", r"e0s\.1 must be finite"),
    ],
)
def test_bad_values_are_named(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="is not key=value"):
        load_config(write(tmp_path, "model: mace\n"), ["epochs"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


def test_quickstart_preset_is_a_valid_config():
    config = load_config(None)
    assert config.name == QUICKSTART["name"] and config.train_file is None
    assert load_config(None, ["epochs=1"]).epochs == 1


def test_checkpoint_byte_flip_is_caught(tmp_path):
    """Checkpoints carry the same SHA-256 content digest as model files, checked on resume."""
    import torch

    from equitensor.train.checkpoint import load_checkpoint, save_checkpoint

    weights = torch.arange(64, dtype=torch.float64)
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model_state": {"w": weights}, "epoch": 3})
    assert load_checkpoint(path)["epoch"] == 3
    data = bytearray(path.read_bytes())
    start = bytes(data).find(weights.numpy().tobytes()[8:24])
    data[start : start + 8] = bytes(8)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="last.pt is corrupted"):
        load_checkpoint(path)
