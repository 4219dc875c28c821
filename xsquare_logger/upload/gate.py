"""The network gate: may sessions leave the robot right now? Every check names its reason.

Order of checks: allowed network (wireless interface up by default, interface
and SSID allow-lists), not while recording, time window, then whether the
destination answers (cached while it does, so the check costs one request per
``probe_interval``). Between parts only the local checks run: cheap, no network.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from xsquare_logger.config.upload import GateConfig, parse_time_window
from xsquare_logger.upload.backends import Backend, BackendError

__all__ = ["Gate", "Interface", "read_ssid", "up_interfaces"]


class Interface:
    """A network interface as sysfs shows it."""

    __slots__ = ("name", "wireless")

    def __init__(self, name: str, wireless: bool) -> None:
        self.name = name
        self.wireless = wireless

    def __repr__(self) -> str:
        return f"Interface({self.name!r}, wireless={self.wireless})"


def up_interfaces(sysfs_root: Path) -> list[Interface]:
    """Non-loopback interfaces that are up, from ``<sysfs_root>/class/net/*``.

    Up means ``operstate`` is ``up`` (or ``unknown`` with ``carrier`` 1, as some
    drivers report); wireless means the kernel exposes ``wireless/`` or
    ``phy80211`` for it. A Wi-Fi interface that is not associated reads ``down``
    or ``dormant``, so "up and wireless" means "on a Wi-Fi network".
    """
    found: list[Interface] = []
    net = sysfs_root / "class" / "net"
    if not net.is_dir():
        return found
    for d in sorted(net.iterdir()):
        if d.name == "lo":
            continue
        try:
            state = (d / "operstate").read_text().strip()
        except OSError:
            continue
        if state == "unknown":
            try:
                state = "up" if (d / "carrier").read_text().strip() == "1" else "down"
            except OSError:
                state = "down"
        if state != "up":
            continue
        wireless = (d / "wireless").exists() or (d / "phy80211").exists()
        found.append(Interface(d.name, wireless))
    return found


def read_ssid(interface: str) -> str | None:
    """SSID the interface is associated with, via ``iw`` or ``iwgetid``; None if unknown."""
    iw = shutil.which("iw")
    if iw:
        try:
            out = subprocess.run(
                [iw, "dev", interface, "link"], capture_output=True, text=True, timeout=2
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("SSID:"):
                return line[len("SSID:") :].strip()
    iwgetid = shutil.which("iwgetid")
    if iwgetid:
        try:
            out = subprocess.run(
                [iwgetid, interface, "-r"], capture_output=True, text=True, timeout=2
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        return out or None
    return None


class Gate:
    """Decides whether uploads may run; ``check()`` returns None (open) or why it is closed.

    ``is_recording`` says whether a session is being recorded; ``ssid_reader`` and
    ``now`` (local time) are parameters so the policy can be exercised without Wi-Fi.
    """

    def __init__(
        self,
        config: GateConfig,
        backend: Callable[[], Backend],
        is_recording: Callable[[], bool],
        ssid_reader: Callable[[str], str | None] = read_ssid,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.config = config
        self._backend = backend
        self._is_recording = is_recording
        self._ssid_reader = ssid_reader
        self._now = now
        self._window = parse_time_window(config.time_window)
        self._probe_ok_until = 0.0
        self.last_reason: str | None = None  # last closed reason, for status

    # -- the parts --------------------------------------------------------------------------
    def network_reason(self) -> str | None:
        cfg = self.config
        ifaces = up_interfaces(cfg.sysfs_root)
        if cfg.network == "wireless":
            ifaces = [i for i in ifaces if i.wireless]
        if cfg.interfaces:
            ifaces = [i for i in ifaces if i.name in cfg.interfaces]
        if not ifaces:
            kind = "wireless interface" if cfg.network == "wireless" else "network interface"
            allowed = f" among {cfg.interfaces}" if cfg.interfaces else ""
            return f"no {kind} up{allowed}"
        if not cfg.ssids:
            return None
        seen = []
        for iface in ifaces:
            ssid = self._ssid_reader(iface.name)
            if ssid in cfg.ssids:
                return None
            seen.append(f"{iface.name}: {ssid if ssid is not None else 'SSID unknown'}")
        return f"not on an allowed Wi-Fi network {cfg.ssids} ({'; '.join(seen)})"

    def window_reason(self) -> str | None:
        if self._window is None:
            return None
        start, end = self._window
        t = self._now()
        minute = t.hour * 60 + t.minute
        inside = start <= minute < end if start < end else (minute >= start or minute < end)
        if start == end or inside:
            return None
        return f"outside the upload window {self.config.time_window} (now {t:%H:%M})"

    def local_reason(self) -> str | None:
        """Network, recording and time-window checks (no request to the destination).

        Cheap (a few sysfs reads): it runs before every part, so a closing gate
        pauses the transfer at the next part boundary.
        """
        reason = self.network_reason()
        if reason is None and not self.config.while_recording and self._is_recording():
            reason = "a session is being recorded (upload.gate.while_recording is false)"
        if reason is None:
            reason = self.window_reason()
        return reason

    def probe_reason(self) -> str | None:
        now = time.monotonic()
        if now < self._probe_ok_until:
            return None
        try:
            self._backend().probe()
        except BackendError as exc:
            return f"destination not answering: {exc}"
        self._probe_ok_until = now + self.config.probe_interval
        return None

    def check(self) -> str | None:
        """None if uploads may run now, else the reason they may not."""
        reason = self.local_reason() or self.probe_reason()
        self.last_reason = reason
        return reason

    def forget_probe(self) -> None:
        """After a failed transfer, ask the destination again before the next one."""
        self._probe_ok_until = 0.0
