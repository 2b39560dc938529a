"""Measuring what autograd keeps alive: the peak bytes of tensors saved for backward.

Process RSS mixes the allocator's caching, the data and Python itself into one number; the bytes that
autograd has saved for the backward pass are the part the memory modes of
:func:`compdd.methods.tm.unroll.matching_gradients` actually change. :class:`SavedTensorMeter` counts them
through ``torch.autograd.graph.saved_tensors_hooks``: each saved tensor's storage is counted once while any
saved reference to it is alive, and the peak of that sum is recorded.
"""

from __future__ import annotations

import weakref
from types import TracebackType

import torch
from torch import Tensor


class _Saved:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: Tensor):
        self.tensor = tensor


class SavedTensorMeter:
    """``with SavedTensorMeter() as m: ...`` then ``m.peak`` (bytes) and ``m.current``."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self._live: dict[int, list[int]] = {}  # storage pointer -> [references, bytes]
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: Tensor) -> _Saved:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        entry = self._live.get(key)
        if entry is None:
            self._live[key] = [1, storage.nbytes()]
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        else:
            entry[0] += 1
        box = _Saved(t)
        weakref.finalize(box, self._release, key)
        return box

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self._live[key]

    @staticmethod
    def _unpack(box: _Saved) -> Tensor:
        return box.tensor

    def __enter__(self) -> SavedTensorMeter:
        self._hooks.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._hooks.__exit__(exc_type, exc, tb)
