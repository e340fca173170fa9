"""Datasets: the paper's artificial sets, the grid, MNIST from IDX files, download and fallback."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from dni_dist.data import BatchStream, load_dataset
from dni_dist.data.mnist import FILES, DataError, load_mnist, load_subset, read_idx, write_idx


@pytest.mark.parametrize(("name", "n", "d"), [("linear2", 100, 2), ("noisy100", 1000, 100), ("random2", 100, 2)])
def test_artificial_sizes_and_one_hot(name: str, n: int, d: int) -> None:
    ds = load_dataset(name)
    assert ds.x_train.shape == (n, d) and ds.y_train.shape == (n, 2)
    assert torch.equal(ds.y_train.sum(1), torch.ones(n))
    again = load_dataset(name)
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.labels_train, again.labels_train)


@pytest.mark.parametrize(("kind", "dim", "flipped"), [("linear", 100, 0), ("noisy", 2, 10), ("noisy", 100, 100)])
def test_labels_come_from_an_origin_crossing_hyperplane(kind: str, dim: int, flipped: int) -> None:
    import dni_dist.data as data

    g = torch.Generator().manual_seed(data._name_seed(f"{kind}{dim}"))
    x = torch.randn(100 if dim == 2 else 1000, dim, generator=g)
    clean = (x @ torch.randn(dim, generator=g) > 0).long()
    x_ds, labels = data.artificial(kind, dim)
    assert torch.equal(x, x_ds)
    assert int((clean != labels).sum()) == flipped  # `noisy`: exactly 10 % swapped


def test_grid_is_a_full_square_grid() -> None:
    ds = load_dataset("grid2")
    assert ds.x_train.shape == (400, 2)
    assert 0 < int(ds.labels_train.sum()) < 400


def test_bundled_subset_split_is_deterministic_and_stratified() -> None:
    a, b = load_subset(), load_subset()
    assert a.x_train.shape == (4000, 784) and a.x_test.shape == (1000, 784)
    assert torch.equal(a.labels_test, b.labels_test) and torch.equal(a.x_train, b.x_train)
    assert torch.bincount(a.labels_test).tolist() == [100] * 10
    assert float(a.x_train.max()) == 1.0 and float(a.x_train.min()) == 0.0


def test_idx_roundtrip_and_malformed_files(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("x.idx", "x.idx.gz"):
        write_idx(tmp_path / name, arr)
        assert np.array_equal(read_idx(tmp_path / name), arr)
    (tmp_path / "bad").write_bytes(b"\x08\x00\x00\x01\x00\x00\x00\x05abc")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(DataError, match="header says"):
        read_idx(tmp_path / "short")


@pytest.fixture
def mnist_server(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server with MNIST-format .gz files (made from the bundled subset)."""
    sub = load_subset()
    serve = tmp_path / "mirror"
    serve.mkdir()
    images = lambda t: (t.reshape(-1, 28, 28) * 255).round().to(torch.uint8).numpy()  # noqa: E731
    write_idx(serve / (FILES["train_images"] + ".gz"), images(sub.x_train[:300]))
    write_idx(serve / (FILES["train_labels"] + ".gz"), sub.labels_train[:300].numpy().astype(np.uint8))
    write_idx(serve / (FILES["test_images"] + ".gz"), images(sub.x_test[:100]))
    write_idx(serve / (FILES["test_labels"] + ".gz"), sub.labels_test[:100].numpy().astype(np.uint8))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(serve))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_download_from_a_mirror_then_load_from_disk(tmp_path: Path, mnist_server: str) -> None:
    data_dir = tmp_path / "mnist"
    ds = load_mnist(data_dir=str(data_dir), mirror=mnist_server)
    assert ds.x_train.shape == (300, 784) and ds.x_test.shape == (100, 784)
    assert "IDX files" in ds.source
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(f + ".gz" for f in FILES.values())
    again = load_mnist(data_dir=str(data_dir), download=False)
    assert torch.equal(again.x_train, ds.x_train)


def test_offline_falls_back_to_the_bundled_subset(tmp_path: Path) -> None:
    ds = load_mnist(data_dir=str(tmp_path / "none"), mirror="http://127.0.0.1:9/")  # nothing listens on port 9
    assert "bundled" in ds.source and ds.x_train.shape == (4000, 784)
    assert not any((tmp_path / "none").glob("*.part")), "a failed download must not leave partial files"


def test_batch_stream_is_deterministic_and_covers_each_epoch() -> None:
    x = torch.arange(10).float().unsqueeze(1)
    labels = torch.arange(10) % 2
    a = iter(BatchStream(x, labels, 2, 5, seed=1))
    b = iter(BatchStream(x, labels, 2, 5, seed=1))
    first = [next(a)[0] for _ in range(2)]
    assert torch.equal(torch.cat(first).sort(0).values.squeeze(1), torch.arange(10).float())
    assert all(torch.equal(u, next(b)[0]) for u in first)
    full = iter(BatchStream(x, labels, 2, 0, seed=1))
    assert torch.equal(next(full)[0], x)
