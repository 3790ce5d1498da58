"""The on-disk format of every array artifact: a reproducible .npz, read without pickle.

numpy's own savez stamps each member with the current time, so equal arrays would give
different bytes (and different DVC hashes) on every run. This writes the same zip
layout, uncompressed, with a fixed timestamp. np.load reads such a file, but copies every
member and checks its CRC (0.1-0.5 s for the 188 MB of training images); load_arrays
instead maps each member's bytes straight from the file, copy-on-write, so a stage pays
only for the pages it touches. Without the CRC check, a damaged byte inside an array is
not noticed here; DVC's md5 of every output is what guards the files. Object arrays are
refused both ways: loading never unpickles, so it never executes code.
"""

from __future__ import annotations

import math
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from stages.runtime import PipelineError, atomic_path

_EPOCH = (1980, 1, 1, 0, 0, 0)

# Each member's .npy starts on a 64-byte boundary in the file, and .npy pads its own header
# to 64 bytes, so mapped arrays are aligned as numpy and BLAS expect.
_ALIGN = 64
_PADDING_ID = 0xD935  # the extra-field id Android's zipalign uses; zip readers skip it
_ZIP64_LOCAL_EXTRA = 20  # what zipfile adds to the local header with force_zip64

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, fixed fields, name and extra lengths
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def save_arrays(path: Path | str, **arrays: np.ndarray) -> None:
    with (
        atomic_path(path) as tmp,
        open(tmp, "wb") as file,
        zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive,
    ):
        for name, array in arrays.items():
            array = np.asarray(array)
            if array.dtype == object:
                raise TypeError(f"{name}: object arrays would need pickle")
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.extra = _alignment_padding(file.tell(), info.filename)
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _alignment_padding(header_offset: int, filename: str) -> bytes:
    """A zip extra field that makes the member's data start on an _ALIGN boundary."""
    header_end = (
        header_offset + _LOCAL_HEADER.size + len(filename.encode()) + 4 + _ZIP64_LOCAL_EXTRA
    )
    size = -header_end % _ALIGN
    return struct.pack("<HH", _PADDING_ID, size) + bytes(size)


def load_arrays(path: Path | str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays, memory-mapped; a missing file or member is a PipelineError naming it."""
    try:
        with open(path, "rb") as file, zipfile.ZipFile(file) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            missing = [n for n in names if n not in members]
            if missing:
                raise PipelineError(
                    f"{path}: missing {', '.join(missing)}; re-run the stage that writes it"
                )
            return {n: _map_member(file, members[n]) for n in names}
    except (OSError, ValueError, struct.error, zipfile.BadZipFile) as exc:
        raise PipelineError(
            f"{path}: cannot read ({exc}); re-run the stage that writes it"
        ) from None


def _member_start(file: BinaryIO, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes begin: after its local header, name and extra field."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{info.filename} is compressed; save_arrays never writes that")
    file.seek(info.header_offset)
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(file.read(_LOCAL_HEADER.size))
    if signature != b"PK\x03\x04":
        raise ValueError(f"{info.filename}: damaged zip entry")
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


def _map_member(file: BinaryIO, info: zipfile.ZipInfo) -> np.ndarray:
    """One member's .npy as an array backed by the file's pages (writes stay private)."""
    member_start = _member_start(file, info)
    file.seek(member_start)
    version = np.lib.format.read_magic(file)
    if version not in _NPY_HEADER_READERS:
        raise ValueError(f"{info.filename}: .npy format {version} is not supported")
    shape, fortran_order, dtype = _NPY_HEADER_READERS[version](file)
    if dtype.hasobject:
        raise ValueError(f"{info.filename}: object arrays would need pickle")
    data_start = file.tell()
    nbytes = math.prod(shape) * dtype.itemsize
    if data_start - member_start + nbytes != info.file_size:
        raise ValueError(f"{info.filename}: its size does not match its header")
    if nbytes == 0:  # an empty mapping is not allowed
        return np.empty(shape, dtype)
    order = "F" if fortran_order else "C"
    mapped = np.memmap(file, dtype=dtype, mode="c", offset=data_start, shape=shape, order=order)
    return np.asarray(mapped)  # a plain ndarray; it keeps the mapping alive
