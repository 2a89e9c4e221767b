"""A virtual X display for the GUI tests, and screenshots of it.

:func:`start_xvfb` installs Xvfb where it can (root with apt-get, as ``.ci/run`` does) and
starts it on a free display; where it cannot, it returns why, and the tests skip saying so.
Screenshots come from Pillow's ``ImageGrab`` (X11 through XCB).
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import sys
import time

__all__ = ["start_xvfb", "grab", "is_blank", "window_bbox", "wait_for"]

_PACKAGES = ["xvfb", "x11-utils"]  # the server, and xwininfo to find windows by title


def _install_reason() -> str | None:
    """Install Xvfb if possible; None when it is there, else why it is not."""
    if shutil.which("Xvfb"):
        return None
    if not sys.platform.startswith("linux"):
        return "Xvfb runs on Linux only"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return ("Xvfb is not installed and the tests do not run as root to install it "
                "(apt-get install xvfb x11-utils)")
    if not shutil.which("apt-get"):
        return "Xvfb is not installed and there is no apt-get to install it"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "install", "-y", "-qq", *_PACKAGES], ["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", *_PACKAGES]):
        try:
            subprocess.run(cmd, env=env, capture_output=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if shutil.which("Xvfb"):
            return None
    return "apt-get install xvfb failed (no network or no package index?)"


def start_xvfb(size=(1600, 1200)):
    """``(process, ":N")`` of a new Xvfb server, or ``(None, reason)``."""
    reason = _install_reason()
    if reason:
        return None, reason
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0",
                             f"{size[0]}x{size[1]}x24", "-nolisten", "tcp"],
                            pass_fds=[write_fd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    os.close(write_fd)
    # read up to the newline, and keep the pipe open meanwhile: Xvfb fails when it cannot
    # write the whole line
    data, end = b"", time.monotonic() + 30
    while not data.endswith(b"\n") and time.monotonic() < end:
        ready, _, _ = select.select([read_fd], [], [], 1)
        chunk = os.read(read_fd, 64) if ready else b""
        if ready and not chunk:
            break
        data += chunk
    os.close(read_fd)
    number = data.decode().strip()
    if not number.isdigit():
        proc.kill()
        proc.wait()
        return None, "Xvfb did not start (no display number within 30 s)"
    display = f":{number}"
    end = time.monotonic() + 20
    while True:  # the server may accept connections a moment after it gives its number
        try:
            grab(display)
            return proc, display
        except Exception as exc:  # not yet; or Pillow without XCB
            if time.monotonic() > end:
                proc.kill()
                proc.wait()
                return None, f"cannot take screenshots of Xvfb with Pillow ({exc})"
            time.sleep(0.2)


def grab(display: str, bbox=None):
    """A screenshot (PIL RGB image) of ``display``, or of its ``bbox`` (x0, y0, x1, y1)."""
    from PIL import ImageGrab

    return ImageGrab.grab(bbox=bbox, xdisplay=display).convert("RGB")


def is_blank(image) -> bool:
    """True when one colour covers 95 % of the image or it has fewer than 16 colours."""
    colours = image.getcolors(maxcolors=1 << 20) or []
    if len(colours) < 16:
        return True
    return max(count for count, _ in colours) > 0.95 * image.width * image.height


def window_bbox(display: str, title: str):
    """``(x0, y0, x1, y1)`` of the first top-level window whose title contains ``title``
    (via ``xwininfo``), or None (no such window, or no xwininfo)."""
    if not shutil.which("xwininfo"):
        return None
    out = subprocess.run(["xwininfo", "-root", "-tree", "-display", display],
                         capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        match = re.search(r'"(.*)":.*?\s(\d+)x(\d+)\+-?\d+\+-?\d+\s+\+(-?\d+)\+(-?\d+)', line)
        if match and title in match.group(1):
            w, h, x, y = (int(match.group(k)) for k in (2, 3, 4, 5))
            if w > 1 and h > 1:
                return max(x, 0), max(y, 0), x + w, y + h
    return None


def wait_for(condition, timeout: float, what: str, proc=None):
    """Poll ``condition()`` until it returns something true; fail after ``timeout`` s or
    when ``proc`` ends."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (status {proc.returncode}) before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
