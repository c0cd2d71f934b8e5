"""Pieces of the Storage SCP that keep receiving cheap: the reader over a received instance's
file header and data set (read without joining them), and the supported presentation contexts
that pynetdicom copies for every association."""
from __future__ import annotations

import copy
import io
import os
import random

import pydicom
import pytest
from pynetdicom import AE, AllStoragePresentationContexts
from pynetdicom.sop_class import Verification

from dicom_factory import mg_dataset
from dicom_node.scp import TRANSFER_SYNTAXES, JoinedReader, SupportedContext


@pytest.mark.parametrize("seed", range(20))
def test_joined_reader_reads_and_seeks_like_the_joined_bytes(seed):
    rng = random.Random(seed)
    data = os.urandom(5000)
    cuts = sorted(rng.sample(range(1, 5000), rng.randint(0, 4)))
    edges = [0, *cuts, 5000]
    ours, ref = JoinedReader([data[a:b] for a, b in zip(edges, edges[1:])]), io.BytesIO(data)
    for _ in range(200):
        op = rng.random()
        if op < 0.25:
            where = rng.randint(0, 5200)
            assert ours.seek(where) == ref.seek(where)
        elif op < 0.35:
            step = rng.randint(-100, 100)
            if ref.tell() + step >= 0:
                assert ours.seek(step, io.SEEK_CUR) == ref.seek(step, io.SEEK_CUR)
        elif op < 0.4:
            back = rng.randint(-5000, 10)
            assert ours.seek(back, io.SEEK_END) == ref.seek(back, io.SEEK_END)
        else:
            n = rng.choice([-1, 0, 1, 7, 100, 3000, 6000])
            assert ours.read(n) == ref.read(n)
        assert ours.tell() == ref.tell()
    with pytest.raises(ValueError):
        ours.seek(-1)


def test_a_header_is_read_from_the_parts_as_from_the_file():
    buffer = io.BytesIO()
    mg_dataset(64, 48, seed=3).save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    for cut in (132, 200, len(data) // 2):
        header = pydicom.dcmread(JoinedReader([data[:cut], data[cut:]]), stop_before_pixels=True)
        assert header == pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def test_supported_contexts_copy_like_pynetdicoms_contexts():
    ae = AE()
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
    theirs = ae.supported_contexts
    ours = [SupportedContext.of(context) for context in theirs]
    for original, copied in zip(copy.deepcopy(theirs), copy.deepcopy(ours)):
        assert type(copied) is SupportedContext
        assert vars(copied) == vars(original) and str(copied) == str(original)
    # a copy is a copy: what negotiation changes on it leaves the server's context as it was
    copied = copy.deepcopy(ours[0])
    copied.add_transfer_syntax("1.2.840.10008.1.2.4.50")
    copied.context_id = 7
    assert ours[0].transfer_syntax == theirs[0].transfer_syntax and ours[0].context_id is None
