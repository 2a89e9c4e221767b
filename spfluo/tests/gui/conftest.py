"""The GUI tests run on a virtual X display (Xvfb), or are skipped saying why."""

import pytest

from ._screen import start_xvfb


@pytest.fixture(scope="session")
def xdisplay():
    """The name (``":N"``) of a virtual display for the session."""
    proc, display = start_xvfb()
    if proc is None:
        pytest.skip(display)
    yield display
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def on_display(xdisplay, monkeypatch):
    """This process's windows go to the virtual display (``$DISPLAY``)."""
    monkeypatch.setenv("DISPLAY", xdisplay)
    return xdisplay
