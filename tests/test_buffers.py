"""The pool that recycles the memory of large film arrays."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from vheight import buffers

SHAPE = (2000, 2000)  # 16 MB of float32: pooled


@pytest.fixture(autouse=True)
def empty_pool():
    buffers.clear()
    yield
    buffers.clear()


def test_small_arrays_are_plain_numpy_arrays():
    array = buffers.empty((100, 100), np.uint16)
    assert array.dtype == np.uint16 and array.shape == (100, 100)
    assert array.base is None
    del array
    assert buffers.pooled_bytes() == 0


def test_large_array_behaves_like_numpy_empty():
    array = buffers.empty(SHAPE, np.float32)
    assert array.shape == SHAPE and array.dtype == np.float32
    assert array.flags.c_contiguous and array.flags.writeable and array.flags.aligned
    array[...] = 1.5
    assert float(array.sum(dtype=np.float64)) == 1.5 * array.size


def test_memory_comes_back_only_after_the_last_view_is_gone():
    first = buffers.empty(SHAPE, np.float32)
    first[...] = 7.0
    address = first.ctypes.data
    view = first[::2]
    readonly = first.view()
    readonly.flags.writeable = False
    del first
    gc.collect()
    assert buffers.pooled_bytes() == 0
    second = buffers.empty(SHAPE, np.float32)  # the first is still referenced: new memory
    assert second.ctypes.data != address
    second[...] = 0.0
    assert np.all(view == 7.0) and np.all(readonly == 7.0)
    del view, readonly
    assert buffers.pooled_bytes() == np.prod(SHAPE) * 4
    third = buffers.empty(SHAPE, np.float32)
    assert third.ctypes.data == address
    assert buffers.pooled_bytes() == 0


def test_a_buffer_is_reused_for_another_dtype_of_the_same_size():
    first = buffers.empty((4000, 2000), np.uint16)
    address = first.ctypes.data
    del first
    second = buffers.empty(SHAPE, np.float32)
    assert second.ctypes.data == address and second.dtype == np.float32


def test_the_pool_is_bounded():
    arrays = [buffers.empty((1000 + i, 2100), np.float32) for i in range(buffers.KEEP_BUFFERS + 3)]
    del arrays
    assert buffers.pooled_bytes() <= buffers.KEEP_BYTES
    assert len(buffers._free) == buffers.KEEP_BUFFERS


def test_films_loaded_one_after_another_reuse_memory(tmp_path):
    from vheight.film import load_film

    pixels = (np.arange(2000 * 2400, dtype=np.uint32) % 4096).astype(np.uint16)
    path = tmp_path / "big.dcm"
    _write_plain(pixels.reshape(2000, 2400), path)
    first = load_film(path)
    expected = first.pixels.copy()
    addresses = {first.pixels.ctypes.data, first.stored.ctypes.data}
    del first
    second = load_film(path)
    assert {second.pixels.ctypes.data, second.stored.ctypes.data} == addresses
    np.testing.assert_array_equal(second.pixels, expected)


def _write_plain(pixels: np.ndarray, path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.set_pixel_data(pixels, "MONOCHROME2", 12)
    ds.save_as(path, enforce_file_format=True)
