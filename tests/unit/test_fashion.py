"""Fashion-MNIST: the full IDX set (Debian's dataset-fashion-mnist, or data.data_dir), the
error that says how to get it, and mnist's unchanged defaults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dni_dist import ConfigError, config_from_dict, train
from dni_dist.config import DataConfig
from dni_dist.data import dataset_image_shape, dataset_shape, load_dataset
from dni_dist.data.fashion import DEFAULT_DIR, missing_files
from dni_dist.data.mnist import FILES, DataError, write_idx

ROOT = Path(__file__).resolve().parents[2]
FULL = pytest.mark.skipif(
    bool(missing_files()),
    reason=f"Fashion-MNIST is not in {DEFAULT_DIR}: apt-get install dataset-fashion-mnist (.ci/run does)",
)


def _write_small_set(root: Path, n_train: int = 40, n_test: int = 20) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        stem = "train" if split == "train" else "t10k"
        write_idx(root / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{stem}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))


def test_names_and_shapes_without_loading() -> None:
    assert dataset_shape("fashion-mnist") == (784, 10)
    assert dataset_image_shape("fashion-mnist") == (1, 28, 28) == dataset_image_shape("mnist")
    assert dataset_image_shape("noisy100") is None


def test_reads_idx_files_from_data_dir(tmp_path: Path) -> None:
    _write_small_set(tmp_path)
    ds = load_dataset("fashion-mnist", data_dir=str(tmp_path))
    assert ds.x_train.shape == (40, 784) and ds.x_test.shape == (20, 784) and ds.image_shape == (1, 28, 28)
    assert float(ds.x_train.max()) <= 1.0 and ds.labels_train.tolist()[:3] == [0, 1, 2]
    assert str(tmp_path) in ds.source


def test_missing_files_say_how_to_get_them(tmp_path: Path) -> None:
    _write_small_set(tmp_path)
    (tmp_path / f"{FILES['test_labels']}.gz").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", data_dir=str(tmp_path))
    message = str(info.value)
    for part in ("t10k-labels-idx1-ubyte not found in", "apt-get install dataset-fashion-mnist",
                 "data.data_dir", "zalandoresearch/fashion-mnist"):  # fmt: skip
        assert part in message, message
    _write_small_set(tmp_path / "bad", n_train=40)
    write_idx(tmp_path / "bad" / "train-labels-idx1-ubyte.gz", np.zeros(39, dtype=np.uint8))
    with pytest.raises(DataError, match="damaged"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path / "bad"))


def test_mnist_keeps_its_default_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    import dni_dist.data.mnist as mnist

    seen = {}

    def fake(**kwargs: object) -> object:
        seen.update(kwargs)
        raise RuntimeError("stop")

    monkeypatch.setattr(mnist, "load_mnist", fake)
    with pytest.raises(RuntimeError, match="stop"):
        load_dataset("mnist", data_dir=DataConfig().data_dir)
    assert seen["data_dir"] == "~/.cache/dni_dist/mnist"


def test_fashion_has_no_subset() -> None:
    with pytest.raises(ConfigError, match=r"data\.subset"):
        config_from_dict({"data": {"name": "fashion-mnist", "subset": True}})


@FULL
def test_the_full_set_is_60000_and_10000_balanced_images() -> None:
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60_000, 784) and ds.x_test.shape == (10_000, 784)
    assert ds.labels_train.bincount().tolist() == [6000] * 10
    assert ds.labels_test.bincount().tolist() == [1000] * 10
    assert DEFAULT_DIR in ds.source


@FULL
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fashion_cnn_recipe_learns_with_synthetic_gradients() -> None:
    from dni_dist import load_recipe

    cfg = load_recipe(ROOT / "launch" / "fashion-cnn.toml", overrides={"run.steps": "150"})  # 0.840 at 150
    result = train(cfg)
    assert result.topology.num_stages == 4 and set(result.topology.methods) == {"sg"}
    assert result.test_accuracy > 0.82, result.test_accuracy
