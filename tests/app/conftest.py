"""The command's tests: a run of several starts (the grid's recipe) scores each on 400 samples, not 5,000 (the
same code, a twelfth of the work)."""
import pytest

from fastgan.app import starts


@pytest.fixture(autouse=True)
def _fewer_scored_samples(monkeypatch):
    monkeypatch.setattr(starts, "SCORE_SAMPLES", 400)
