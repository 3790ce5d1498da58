"""Reading and writing IDX files (the MNIST format), gzip-compressed or plain.

Header: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions,
then one big-endian uint32 per dimension. Images are 3-d (count, 28, 28) with magic
2051; labels are 1-d (count) with magic 2049.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from mnist_pipeline.runtime import PipelineError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
IMAGE_SIDE = 28
N_CLASSES = 10


class IdxError(PipelineError):
    """An IDX file is corrupt, truncated or not what the pipeline expects."""


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: Path | str) -> np.ndarray:
    """Read any unsigned-byte IDX file into a uint8 array of its declared shape."""
    path = Path(path)
    try:
        with _open(path) as stream:
            data = stream.read()
    except (OSError, EOFError) as exc:
        raise IdxError(f"{path}: cannot read ({exc}); delete it and re-run the download") from None
    if len(data) < 4:
        raise IdxError(f"{path}: too short to be an IDX file ({len(data)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08 or not 1 <= ndim <= 3:
        magic = struct.unpack(">I", data[:4])[0]
        raise IdxError(f"{path}: bad magic number {magic}; not an unsigned-byte IDX file")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{path}: header truncated")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise IdxError(
            f"{path}: header declares shape {shape} ({expected} bytes) but the file has "
            f"{len(data)} bytes; the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_images(path: Path | str) -> np.ndarray:
    images = read_idx(path)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise IdxError(
            f"{path}: expected images of shape (count, 28, 28) (magic {IMAGES_MAGIC}), "
            f"got {images.shape}; is this a labels file?"
        )
    return images


def read_labels(path: Path | str) -> np.ndarray:
    labels = read_idx(path)
    if labels.ndim != 1:
        raise IdxError(
            f"{path}: expected a 1-d labels file (magic {LABELS_MAGIC}), got shape {labels.shape}"
        )
    if labels.size and labels.max() >= N_CLASSES:
        raise IdxError(f"{path}: label {labels.max()} out of range 0-{N_CLASSES - 1}")
    return labels


def write_idx(path: Path | str, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzip-compressed when path ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        # No name and mtime=0 in the gzip header: the same content gives the same bytes.
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
        ):
            gz.write(payload)
    else:
        path.write_bytes(payload)
