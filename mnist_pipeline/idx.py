"""Reading IDX files (the MNIST format), gzip-compressed or plain.

Header: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions,
then one big-endian uint32 per dimension. Images are 3-d (count, 28, 28) with magic
2051; labels are 1-d (count) with magic 2049.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
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


CHUNK = 1 << 20


def read_idx(path: Path | str, max_size: int | None = None) -> np.ndarray:
    """Read any unsigned-byte IDX file into a uint8 array of its declared shape.

    The header is checked first, then the data is read straight into an array of the
    declared size: memory stays at the file's real size whatever follows the header (a
    gzip bomb drove the whole-file read past 4 GB). `max_size` bounds the declared size.
    """
    path = Path(path)
    try:
        with _open(path) as stream:
            shape = _read_header(path, stream)
            size = math.prod(shape)
            header = 4 + 4 * len(shape)
            if max_size is not None and header + size > max_size:
                raise IdxError(
                    f"{path}: header declares shape {shape} ({header + size} bytes), more than "
                    f"the {max_size} bytes of this file in the data set; the file is corrupt"
                )
            data = np.empty(size, dtype=np.uint8)
            view = memoryview(data)
            filled = 0
            while filled < size and (n := stream.readinto(view[filled : filled + CHUNK])):
                filled += n
            extra = len(stream.read(1))
    except (OSError, EOFError, zlib.error) as exc:
        raise IdxError(f"{path}: cannot read ({exc}); delete it and re-run the download") from None
    except (MemoryError, ValueError):  # a shape no array can have
        raise IdxError(f"{path}: header declares an impossible shape; corrupt file") from None
    if filled != size or extra:
        actual = f"{header + filled} bytes" if not extra else "more bytes"
        raise IdxError(
            f"{path}: header declares shape {shape} ({header + size} bytes) but the file has "
            f"{actual}; the file is truncated or corrupt"
        )
    return data.reshape(shape)


def _read_header(path: Path, stream) -> tuple[int, ...]:
    head = stream.read(4)
    if len(head) < 4:
        raise IdxError(f"{path}: too short to be an IDX file ({len(head)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", head)
    if zero != 0 or dtype != 0x08 or not 1 <= ndim <= 3:
        magic = struct.unpack(">I", head)[0]
        raise IdxError(f"{path}: bad magic number {magic}; not an unsigned-byte IDX file")
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise IdxError(f"{path}: header truncated")
    return struct.unpack(f">{ndim}I", dims)


def read_images(path: Path | str, max_size: int | None = None) -> np.ndarray:
    images = read_idx(path, max_size)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise IdxError(
            f"{path}: expected images of shape (count, 28, 28) (magic {IMAGES_MAGIC}), "
            f"got {images.shape}; is this a labels file?"
        )
    return images


def read_labels(path: Path | str, max_size: int | None = None) -> np.ndarray:
    labels = read_idx(path, max_size)
    if labels.ndim != 1:
        raise IdxError(
            f"{path}: expected a 1-d labels file (magic {LABELS_MAGIC}), got shape {labels.shape}"
        )
    if labels.size and labels.max() >= N_CLASSES:
        raise IdxError(f"{path}: label {labels.max()} out of range 0-{N_CLASSES - 1}")
    return labels
