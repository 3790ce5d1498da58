"""The on-disk format of every array artifact: a reproducible .npz, read without pickle.

numpy's own savez stamps each member with the current time, so equal arrays would give
different bytes (and different DVC hashes) on every run. This writes the same zip
layout with a fixed timestamp; np.load reads it with allow_pickle=False, so loading
never executes code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from stages.runtime import PipelineError, atomic_path

_EPOCH = (1980, 1, 1, 0, 0, 0)


def save_arrays(path: Path | str, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            array = np.asarray(array)
            if array.dtype == object:
                raise TypeError(f"{name}: object arrays would need pickle")
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def load_arrays(path: Path | str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Load the named arrays; a missing file or member is a PipelineError naming it."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [n for n in names if n not in archive.files]
            if missing:
                raise PipelineError(
                    f"{path}: missing {', '.join(missing)}; re-run the stage that writes it"
                )
            return {n: archive[n] for n in names}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise PipelineError(
            f"{path}: cannot read ({exc}); re-run the stage that writes it"
        ) from None
