"""The heap settled every few cases: garbage cycles collected, what lives on frozen out of full collections."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from test_sdtm_spill import SAMPLES


def test_the_settler_frees_garbage_cycles_then_freezes_what_lives_on() -> None:
    import weakref

    from converter.pipeline import Settler

    class Node:
        pass

    settler = Settler(every=3)
    cycle = Node()
    cycle.me = cycle  # type: ignore[attr-defined]
    gone = weakref.ref(cycle)
    kept = [Node()]
    del cycle
    try:
        gc.unfreeze()
        settler.case_done()
        settler.case_done()
        assert gc.get_freeze_count() == 0 and gone() is not None  # not yet: every third case
        settler.case_done()
        assert gone() is None  # the cycle was collected before anything was frozen
        assert gc.get_freeze_count() > 0
        frozen = gc.get_freeze_count()
        kept.clear()  # a frozen object let go is still freed (by reference counting)
        assert gc.get_freeze_count() < frozen
    finally:
        gc.unfreeze()


def test_a_run_leaves_nothing_frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the run froze (compiled mappings, memos, rows) is the collector's again when convert returns."""
    from converter import pipeline
    from converter.run import convert

    monkeypatch.setattr(pipeline.Settler.__init__, "__defaults__", (1,))  # settle after every case
    frozen = []
    real = gc.freeze

    def freeze() -> None:
        real()
        frozen.append(gc.get_freeze_count())

    monkeypatch.setattr(gc, "freeze", freeze)
    gc.unfreeze()
    report = convert(SAMPLES, tmp_path / "out")
    assert report.converted == len(SAMPLES)
    assert len(frozen) >= 1 + len(SAMPLES)  # the pipeline's, then one per case
    assert gc.get_freeze_count() == 0
