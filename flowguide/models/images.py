r"""Image data for the VAE: scikit-learn's bundled 8x8 digits (offline) and MNIST from disk.

Images come as flat float tensors with integer intensities in ``[0, levels)`` (17 levels
for digits, 256 for MNIST) and a fixed train/test split. Two views feed the decoders:

- **binarized** (Bernoulli decoders): a pixel is 1 when its intensity is at least half
  the range;
- **dequantized** (continuous decoders): :math:`v = (x + u) / L` with :math:`u \sim U[0,1)`,
  then :math:`y = \mathrm{logit}(\alpha + (1 - 2\alpha) v)`. A density on :math:`y`
  gives a discrete log-likelihood bound in the original pixel space,
  :math:`\log P(x) \ge E_u[\log p(y) + \log|dy/dv|] - D \log L`, reported in bits per
  dimension (Theis, van den Oord & Bethge, 2016; Dinh et al., 2017).
"""

from __future__ import annotations

import gzip
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from flowguide._extras import require

__all__ = [
    "ImageData",
    "load_digits",
    "load_mnist",
    "load_images",
    "read_idx",
    "binarize",
    "dequantize",
    "bits_per_dim",
]

#: Keeps the logit away from 0 and 1 (the usual choice of RealNVP's preprocessing).
ALPHA = 0.05


@dataclass
class ImageData:
    """A train/test split of flat images with ``levels`` intensity levels and a side length."""

    train: Tensor
    test: Tensor
    levels: int
    side: int
    name: str

    @property
    def dim(self) -> int:
        return self.train.shape[-1]


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> ImageData:
    """scikit-learn's 1,797 8x8 digits, split by a permutation seeded with ``seed``.

    Example:
        >>> data = load_digits()
        >>> data.train.shape, data.test.shape, data.levels
        (torch.Size([1438, 64]), torch.Size([359, 64]), 17)
    """
    sklearn_digits = require("sklearn.datasets", "the bundled digits data").load_digits

    images = torch.as_tensor(sklearn_digits().data, dtype=torch.float32)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_test = round(test_fraction * len(images))
    return ImageData(images[order[n_test:]], images[order[:n_test]], levels=17, side=8, name="digits")


#: MNIST's image files under ``MNIST/raw``, as torchvision lays them out.
MNIST_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}


def load_mnist(data_dir: str | Path) -> ImageData:
    """MNIST's 60,000/10,000 split from the files under ``data_dir/MNIST/raw`` (no download).

    Read by torchvision when it is installed; otherwise by :func:`read_idx`, from the same
    image files (plain or ``.gz``).

    Raises:
        FileNotFoundError: naming the folder and the files it lacks.
    """
    raw = Path(data_dir) / "MNIST" / "raw"
    try:
        from torchvision.datasets import MNIST
    except ImportError:
        return _mnist_from_idx(raw)
    try:
        sets = [MNIST(str(data_dir), train=train, download=False) for train in (True, False)]
    except RuntimeError as error:
        raise FileNotFoundError(f"MNIST files not found under {raw}: {error}") from error
    train, test = (s.data.reshape(len(s.data), -1).float() for s in sets)
    return ImageData(train, test, levels=256, side=28, name="mnist")


def _mnist_from_idx(raw: Path) -> ImageData:
    found = {split: _existing(raw / name) for split, name in MNIST_FILES.items()}
    missing = [MNIST_FILES[split] for split, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(
            f"MNIST files not found under {raw}: missing {', '.join(missing)} (plain or .gz); "
            "use --data digits for the bundled data"
        )
    train, test = (read_idx(found[split]).reshape(-1, 28 * 28).float() for split in ("train", "test"))
    return ImageData(train, test, levels=256, side=28, name="mnist")


def _existing(path: Path) -> Path | None:
    gz = path.with_name(path.name + ".gz")
    return path if path.exists() else gz if gz.exists() else None


def read_idx(path: str | Path) -> Tensor:
    """An unsigned-byte IDX file (MNIST's format, optionally gzipped) as a uint8 tensor.

    The format: two zero bytes, the type code ``0x08`` (unsigned byte), the number of
    dimensions, one big-endian 32-bit size per dimension, then the data in row-major order.

    Raises:
        ValueError: when the header is not that of an unsigned-byte IDX file or the
            data is shorter or longer than its sizes say.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "tiny-idx2-ubyte"
        >>> _ = path.write_bytes(bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6]))
        >>> read_idx(path)
        tensor([[1, 2, 3],
                [4, 5, 6]], dtype=torch.uint8)
    """
    path = Path(path)
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an unsigned-byte IDX file (header {data[:4].hex()})")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: the header needs {ndim} sizes, the file ends first ({len(data)} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    if len(body) != math.prod(shape):
        raise ValueError(f"{path}: sizes {shape} need {math.prod(shape)} bytes, found {len(body)}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def load_images(name: str, data_dir: str | Path | None = None) -> ImageData:
    """``"digits"`` or ``"mnist"`` (which needs ``data_dir``)."""
    if name == "digits":
        return load_digits()
    if name == "mnist":
        if data_dir is None:
            raise ValueError("--data mnist needs --data-dir, the folder holding MNIST/raw")
        return load_mnist(data_dir)
    raise ValueError(f"unknown data {name!r}; choose 'digits' or 'mnist'")


def binarize(x: Tensor, levels: int) -> Tensor:
    """1 where the intensity is at least half the range, else 0.

    Example:
        >>> binarize(torch.tensor([0.0, 8.0, 8.5, 16.0]), levels=17)
        tensor([0., 0., 1., 1.])
    """
    return (x >= levels / 2).to(x.dtype)


def dequantize(x: Tensor, levels: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    r"""Uniformly dequantized, logit-transformed pixels ``y`` and :math:`\sum \log|dy/dv|` per image."""
    u = (
        torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        if generator
        else torch.rand_like(x)
    )
    v = ALPHA + (1 - 2 * ALPHA) * (x + u) / levels
    y = torch.log(v) - torch.log1p(-v)
    log_det = (math.log(1 - 2 * ALPHA) - torch.log(v) - torch.log1p(-v)).sum(-1)
    return y, log_det


def bits_per_dim(log_density_y: Tensor, log_det: Tensor, dim: int, levels: int) -> Tensor:
    r"""Bits per dimension in pixel space from a log-density of the logit pixels ``y``:
    :math:`-(\log p(y) + \log|dy/dv| - D \log L) / (D \log 2)`."""
    return -(log_density_y + log_det - dim * math.log(levels)) / (dim * math.log(2))
