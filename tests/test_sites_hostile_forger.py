"""bench/sites_hostile.py's forger of the epoch records (no root, no daemons): what it calls
mangled is refused by the daemons' reader, every time; what it calls well-formed reads back as
it was forged, so the real daemons meet both kinds."""
from __future__ import annotations

import os
import random
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(str(ROOT), "bench"))
import sites_hostile  # noqa: E402
import spread_mini as sp  # noqa: E402


def forger(seed):
    """A HopForger with what the epoch records need of a capture: the sites' epochs."""
    f = sites_hostile.HopForger.__new__(sites_hostile.HopForger)
    f.rng = random.Random(seed)
    f.epochs = {0: 1796592570483, 1: 1796592570471}
    return f


@pytest.mark.parametrize("seed", range(40))
def test_a_mangled_epoch_record_is_refused_by_the_reader(seed):
    raw = forger(seed).mangled_epoch_record()
    with pytest.raises(sp.RingWireError):
        sp.decode_site_records(raw)


def test_the_well_formed_epoch_records_read_back_as_forged():
    f = forger(1)
    kinds = set()
    for _ in range(60):
        for record in f.epoch_records():
            assert sp.decode_site_records(sp.encode_site_record(record)) == [record]
            kinds.add((record.kind, record.epoch > sp.EPOCH_MAX or record.site_seq > sp.EPOCH_MAX))
    # every kind, with an epoch above EPOCH_MAX (only a forger's) and one below
    assert kinds == {(k, above) for k in (sp.SITE_EPOCH, sp.SITE_FRONTIER, sp.SITE_UNRELIABLE)
                     for above in (False, True)}, kinds
