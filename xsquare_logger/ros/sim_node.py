"""Simulated humanoid: publishes a profile's sensor load as cheaply as possible.

All payloads are pre-rendered and pre-serialized (see ``xsquare_logger.sim.frames``);
per message the publisher thread only patches ``header.stamp`` and hands the
raw CDR ``bytes`` to ``Publisher.publish``.  No executor is spun: one thread
runs an absolute-deadline schedule over the profile's tick groups (a camera's
image + camera_info; the 500 Hz joint states + both gripper wrenches), sleeping
until the next group is due.  A group that falls a whole period or more behind
skips the missed ticks (counted in ``skipped``) instead of bursting to catch up.

Large best-effort samples and Fast DDS: a writer's shared-memory segment is
512 KB by default, and best-effort 720p frames (2.7 MB, sent as ~43 fragments)
then nearly all fail to arrive.  Unless the environment already names a Fast DDS
XML profile (or another RMW is chosen) the sim therefore writes a small default
participant profile with a larger SHM segment before ``rclpy.init``; with
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` its UDP transport is limited to
127.0.0.1.  Subscribers need no change.  ``--no-dds-tuning`` turns it off.

CLI::

    python -m xsquare_logger.ros.sim_node --profile humanoid --duration 20 --stats

With ``--stats`` one JSON line goes to stdout at exit::

    {"published": {topic: n}, "skipped": {topic: n}, "duration_s": s, ...}

(plus ``rate_hz``, ``max_late_ms`` (worst lateness of a tick before it was
published or skipped), ``profile``, ``prebuild_s``...).  Progress goes to stderr.

For benchmarks: ``--wait-subscribers SECONDS`` holds publishing until every
topic has a matched subscriber (no discovery losses to explain away), and
``--rt-priority 10`` runs the publisher thread SCHED_FIFO so a busy box delays
its 500 Hz ticks less (measured: ~0.1% instead of ~0.3-1.5% skipped ticks).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from xsquare_logger.sim.frames import PayloadBank, StampedRing, message_class
from xsquare_logger.sim.profiles import (
    CAMERA_SYNC_JITTER_S,
    CAMERA_SYNC_MODES,
    CAMERA_SYNCED,
    QOS_RELIABLE,
    Profile,
    get_profile,
    profile_names,
)

_NS = 1_000_000_000


def qos_for(kind: str, depth: int = 10) -> QoSProfile:
    """QoS of a profile's QoS kind ("sensor" or "reliable")."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=(
            ReliabilityPolicy.RELIABLE if kind == QOS_RELIABLE else ReliabilityPolicy.BEST_EFFORT
        ),
        durability=DurabilityPolicy.VOLATILE,
    )


# ----------------------------------------------------------------- Fast DDS tuning

_FASTDDS_ENV = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def shm_segment_bytes(profile: Profile) -> int:
    """SHM segment for the sim's participant: ~0.25 s of camera data, 8..512 MiB."""
    mib = 1 << 20
    want = int(profile.image_bytes_per_second() * 0.25)
    return min(512 * mib, max(8 * mib, -(-want // mib) * mib))


def fastdds_profile_xml(segment_bytes: int, loopback_only: bool) -> str:
    allow = (
        "\n        <interfaceWhiteList><address>127.0.0.1</address></interfaceWhiteList>"
        if loopback_only
        else ""
    )
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>xsq_sim_shm</transport_id>
        <type>SHM</type>
        <segment_size>{segment_bytes}</segment_size>
      </transport_descriptor>
      <transport_descriptor>
        <transport_id>xsq_sim_udp</transport_id>
        <type>UDPv4</type>{allow}
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="xsquare_sim" is_default_profile="true">
      <rtps>
        <userTransports>
          <transport_id>xsq_sim_shm</transport_id>
          <transport_id>xsq_sim_udp</transport_id>
        </userTransports>
        <useBuiltinTransports>false</useBuiltinTransports>
      </rtps>
    </participant>
  </profiles>
</dds>
"""


def prepare_fastdds(profile: Profile) -> str | None:
    """Point Fast DDS at a larger-SHM default profile; returns the temp file to delete.

    Does nothing if a profile file is already configured, another RMW is selected,
    or the profile has no images.  Must run before the process's first participant
    is created (Fast DDS reads its default profile file once per process).
    """
    rmw = os.environ.get("RMW_IMPLEMENTATION", "")
    if rmw and not rmw.startswith("rmw_fastrtps"):
        return None
    if any(os.environ.get(k) for k in _FASTDDS_ENV):
        return None
    if profile.image_bytes_per_second() <= 0:
        return None
    scope = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").upper()
    loopback = scope in ("LOCALHOST", "OFF") or os.environ.get("ROS_LOCALHOST_ONLY") == "1"
    fd, path = tempfile.mkstemp(prefix="xsquare_sim_fastdds_", suffix=".xml")
    with os.fdopen(fd, "w") as f:
        f.write(fastdds_profile_xml(shm_segment_bytes(profile), loopback))
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = path
    return path


# ------------------------------------------------------------------------ the node


class _Group:
    """Streams published together on one tick with one stamp."""

    __slots__ = (
        "camera",
        "count",
        "halted",
        "items",
        "max_late_ns",
        "next_due",
        "period_ns",
        "phase",
        "skipped",
        "tick",
        "topics",
        "trigger_jitter_ns",
    )

    def __init__(self, period_ns: int, phase: float):
        self.period_ns = period_ns
        self.phase = phase
        self.items: list[tuple[Any, StampedRing]] = []  # (publish, ring)
        self.topics: list[str] = []
        self.next_due = 0
        self.tick = 0
        self.count = 0
        self.skipped = 0
        self.max_late_ns = 0
        # Cameras: exposure jitter, ns (sd); cameras due on the same tick (hardware-synced)
        # share one trigger stamp. None: not a camera, stamped when published.
        self.trigger_jitter_ns: float | None = None
        self.camera = ""  # the camera of a camera group
        self.halted = False  # stopped on purpose (halt_camera): a camera that dies


class SimNode(Node):
    """Publishes a :class:`Profile`'s streams from one scheduling thread."""

    def __init__(
        self,
        profile: Profile,
        *,
        bank: PayloadBank | None = None,
        node_name: str = "xsquare_sim",
        context: Context | None = None,
    ):
        super().__init__(
            node_name,
            context=context,
            start_parameter_services=False,
            enable_rosout=False,
        )
        self.profile = profile
        self.bank = bank if bank is not None else PayloadBank(profile)
        self._groups: list[_Group] = []
        self._sim_publishers: dict[str, Any] = {}
        by_key: dict[str, _Group] = {}
        for spec in profile.streams:
            g = by_key.get(spec.group_key)
            if g is None:
                g = by_key[spec.group_key] = _Group(round(_NS / spec.rate_hz), spec.phase)
                self._groups.append(g)
            if getattr(spec, "camera", None) is not None:
                g.trigger_jitter_ns = CAMERA_SYNC_JITTER_S * _NS
                g.camera = spec.camera  # type: ignore[attr-defined]
            pub = self.create_publisher(
                message_class(spec.type_name), spec.topic, qos_for(spec.qos)
            )
            self._sim_publishers[spec.topic] = pub
            g.items.append((pub.publish, self.bank[spec.topic]))
            g.topics.append(spec.topic)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0_ns = 0
        self._t1_ns = 0
        self.error: BaseException | None = None
        self.rt_priority = 0

    # -- control

    def start(self, duration: float = 0.0, rt_priority: int = 0) -> None:
        """Start publishing; stop by itself after ``duration`` s (0: until stop()).

        ``rt_priority`` > 0 runs the publisher thread SCHED_FIFO at that priority
        (where permitted), as sensor hardware does not wait for a busy CPU.
        """
        if self._thread is not None:
            raise RuntimeError("already started")
        end_ns = time.monotonic_ns() + int(duration * _NS) if duration > 0 else 0
        self._thread = threading.Thread(
            target=self._run, args=(end_ns, rt_priority), name="sim-publisher", daemon=True
        )
        self._thread.start()

    def halt_camera(self, camera: str) -> None:
        """Stop publishing one camera (image and camera_info) for good, as a camera that
        dies; the other streams go on (any thread)."""
        groups = [g for g in self._groups if g.camera == camera]
        if not groups:
            raise ValueError(f"no camera {camera!r}; cameras: {', '.join(self.profile.cameras)}")
        for g in groups:
            g.halted = True

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_for_subscribers(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Block until every publisher has a matched subscription (True) or timeout."""
        pubs = list(self._sim_publishers.values())
        deadline = time.monotonic() + timeout
        while True:
            if all(p.get_subscription_count() > 0 for p in pubs):
                return True
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                return False
            time.sleep(0.05)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the publisher thread to end (True if it has)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the schedule

    def _run(self, end_ns: int, rt_priority: int = 0) -> None:
        if rt_priority > 0:
            try:
                # pid 0: the calling thread (Linux schedules threads individually).
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt_priority))
                self.rt_priority = rt_priority
            except (AttributeError, OSError) as e:
                print(f"[sim] no real-time priority: {e}", file=sys.stderr, flush=True)
        groups = self._groups
        stop = self._stop
        mono = time.monotonic_ns
        wall = time.time_ns
        sleep = time.sleep
        t0 = mono()
        rng = random.Random(7)
        trigger_due, trigger_stamp = -1, 0  # the last camera tick and its stamp
        self._t0_ns = t0
        for g in groups:
            g.next_due = t0 + int(g.phase * g.period_ns)
        try:
            while groups and not stop.is_set():
                g = groups[0]
                for other in groups:
                    if other.next_due < g.next_due:
                        g = other
                if g.halted:
                    groups = [other for other in groups if other is not g]
                    continue
                due = g.next_due
                if end_ns and due >= end_ns:
                    rest = end_ns - mono()
                    while rest > 0 and not stop.is_set():
                        sleep(min(rest, 100_000_000) / _NS)
                        rest = end_ns - mono()
                    break
                wait = due - mono()
                if wait > 0:
                    # Long waits (slow camera-only schedules) stay responsive to stop().
                    if wait > 100_000_000:
                        sleep(0.1)
                        continue
                    sleep(wait / _NS)
                    late = mono() - due
                else:
                    late = -wait
                if late > g.max_late_ns:
                    g.max_late_ns = late
                if late >= g.period_ns:
                    # The next tick is due already: publish only the latest one.
                    missed = late // g.period_ns
                    g.skipped += missed
                    g.tick += missed
                    due += missed * g.period_ns
                if g.trigger_jitter_ns is None:
                    stamp = wall()
                else:
                    # Cameras on one tick (hardware-synced) share its trigger stamp, each
                    # off by its own small exposure jitter; publishing the frames one after
                    # another adds nothing to the stamps.
                    if due != trigger_due:
                        trigger_due, trigger_stamp = due, wall()
                    jitter = abs(rng.gauss(0.0, g.trigger_jitter_ns))
                    stamp = trigger_stamp - int(min(jitter, 0.4 * g.period_ns))
                tick = g.tick
                for publish, ring in g.items:
                    publish(ring.payload(tick, stamp))
                g.count += 1
                g.tick = tick + 1
                g.next_due = due + g.period_ns
        except BaseException as e:  # reported through stats()["error"]
            self.error = e
        finally:
            self._t1_ns = mono()

    # -- results

    def stats(self) -> dict[str, Any]:
        end = self._t1_ns if self._t1_ns else time.monotonic_ns()
        duration = (end - self._t0_ns) / _NS if self._t0_ns else 0.0
        published: dict[str, int] = {}
        skipped: dict[str, int] = {}
        max_late: dict[str, float] = {}
        for g in self._groups:
            for topic in g.topics:
                published[topic] = g.count
                skipped[topic] = g.skipped
                max_late[topic] = round(g.max_late_ns / 1e6, 3)
        out: dict[str, Any] = {
            "published": published,
            "skipped": skipped,
            "duration_s": round(duration, 4),
            "profile": self.profile.name,
            "rate_hz": {
                t: round(n / duration, 2) if duration > 0 else 0.0 for t, n in published.items()
            },
            "max_late_ms": max_late,
            "rt_priority": self.rt_priority,
        }
        if self.error is not None:
            out["error"] = repr(self.error)
        return out


# ------------------------------------------------------------------------- runners


def run_sim(
    profile: str,
    duration: float,
    cameras: int | None = None,
    stop_event: threading.Event | None = None,
    *,
    dds_tuning: bool = True,
    wait_subscribers: float = 0.0,
    rt_priority: int = 0,
    on_ready: Any = None,
    camera_sync: str = CAMERA_SYNCED,
    camera_content: str = "synthetic",
    camera_rates: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Publish ``profile`` for ``duration`` s (0: until ``stop_event`` is set).

    Uses its own rclpy Context (no signal handlers are installed) so it can run
    inside a process that uses rclpy too.  Returns the stats dict.
    ``wait_subscribers`` > 0: first wait up to that long for every topic to have
    a matched subscriber (so benchmarks compare published with recorded counts
    without discovery losses).  ``on_ready(node)``, if given, is called once
    publishing has started. ``camera_sync``: ``synced`` (hardware-synchronised cameras,
    the default) or ``staggered`` (free-running, ticks spread over the frame period).
    ``camera_content``: ``synthetic`` or ``natural`` (sim/frames.py). ``camera_rates``:
    camera name -> rate (Hz) for cameras that publish off their nominal rate.
    """
    prof = get_profile(profile).with_camera_sync(camera_sync).with_cameras(cameras)
    prof = prof.with_camera_content(camera_content)
    for camera, rate in (camera_rates or {}).items():
        prof = prof.with_camera_rate(camera, rate)
    stop_event = stop_event if stop_event is not None else threading.Event()
    t_build = time.monotonic()
    bank = PayloadBank(prof)
    build_s = time.monotonic() - t_build
    saved_env = {k: os.environ.get(k) for k in _FASTDDS_ENV}
    xml = prepare_fastdds(prof) if dds_tuning else None
    ctx = Context()
    node = None
    try:
        rclpy.init(context=ctx, signal_handler_options=SignalHandlerOptions.NO)
        try:
            node = SimNode(prof, bank=bank, context=ctx)
        finally:
            # The participant exists now and has read the profile: undo the
            # environment change so child processes do not inherit it.
            if xml is not None:
                _restore_env(saved_env)
                with contextlib.suppress(OSError):
                    os.unlink(xml)
        print(
            f"[sim] profile={prof.name} streams={len(prof.streams)} "
            f"prebuilt {bank.nbytes / 1e6:.1f} MB in {build_s:.2f} s; publishing"
            + (f" for {duration:g} s" if duration > 0 else " until stopped"),
            file=sys.stderr,
            flush=True,
        )
        waited = 0.0
        if wait_subscribers > 0:
            t_wait = time.monotonic()
            matched = node.wait_for_subscribers(wait_subscribers, stop_event)
            waited = time.monotonic() - t_wait
            print(
                f"[sim] subscribers {'matched' if matched else 'NOT all matched'} "
                f"after {waited:.2f} s",
                file=sys.stderr,
                flush=True,
            )
        node.start(duration, rt_priority)
        if on_ready is not None:
            on_ready(node)
        while not stop_event.is_set() and node.running:
            stop_event.wait(0.2)
        node.stop()
        stats = node.stats()
        stats["prebuild_s"] = round(build_s, 3)
        stats["waited_for_subscribers_s"] = round(waited, 3)
        return stats
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        with contextlib.suppress(Exception):
            rclpy.shutdown(context=ctx)
        # Finalize the rcl context now (not at interpreter exit): that destroys
        # the DDS participant, which removes its shared-memory segment.
        with contextlib.suppress(Exception):
            ctx.destroy()


def _restore_env(saved: dict[str, str | None]) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m xsquare_logger.ros.sim_node",
        description="Simulated humanoid publishing realistic sensor load.",
    )
    p.add_argument("--profile", default="humanoid", choices=profile_names())
    p.add_argument(
        "--duration", type=float, default=0.0, help="seconds to publish (0: until SIGINT/SIGTERM)"
    )
    p.add_argument("--cameras", type=int, default=None, help="publish only the first N cameras")
    p.add_argument(
        "--camera-sync",
        choices=CAMERA_SYNC_MODES,
        default=CAMERA_SYNCED,
        help="synced: hardware-synchronised cameras, one shared tick (default); staggered: "
        "free-running cameras, ticks spread over the frame period",
    )
    p.add_argument(
        "--camera-content",
        choices=("synthetic", "natural"),
        default="synthetic",
        help="synthetic: gradient + pattern (default); natural: photographs panned and zoomed "
        "plus sensor noise (needs scikit-image)",
    )
    p.add_argument(
        "--stats", action="store_true", help="print one JSON line of per-topic counts at exit"
    )
    p.add_argument(
        "--no-dds-tuning",
        dest="dds_tuning",
        action="store_false",
        help="do not write the larger-SHM Fast DDS profile",
    )
    p.add_argument(
        "--wait-subscribers",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before publishing, wait up to SECONDS for every topic to have a subscriber",
    )
    p.add_argument(
        "--rt-priority",
        type=int,
        default=0,
        metavar="N",
        help="run the publisher thread SCHED_FIFO at priority N (1-99; 0: normal, default)",
    )
    p.add_argument(
        "--camera-rate",
        action="append",
        default=[],
        metavar="CAMERA=HZ",
        help="publish CAMERA (e.g. head) at HZ instead of the profile's rate (repeatable)",
    )
    p.add_argument(
        "--halt-on-usr1",
        action="append",
        default=[],
        metavar="CAMERA",
        help="stop publishing CAMERA for good when the process gets SIGUSR1 (repeatable): "
        "a camera dying mid-run, on the test's cue",
    )
    args = p.parse_args(argv)
    rates = {}
    for item in args.camera_rate:
        name, _, hz = item.partition("=")
        try:
            rates[name] = float(hz)
        except ValueError:
            p.error(f"--camera-rate {item!r}: expected CAMERA=HZ")
    args.camera_rates = rates
    known = get_profile(args.profile).cameras
    for camera in [*args.halt_on_usr1, *rates]:
        if camera not in known:
            p.error(f"no camera {camera!r} in {args.profile}; cameras: {', '.join(known)}")
    if args.duration < 0:
        p.error("--duration must be >= 0")
    if args.cameras is not None and args.cameras < 0:
        p.error("--cameras must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    nodes: list[SimNode] = []

    def _on_usr1(signum: int, _frame: Any) -> None:
        for node in nodes:
            for camera in args.halt_on_usr1:
                node.halt_camera(camera)
        print(f"[sim] halted {', '.join(args.halt_on_usr1)}", file=sys.stderr, flush=True)

    old = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, _on_signal)
        if args.halt_on_usr1:
            old[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, _on_usr1)
    try:
        stats = run_sim(
            args.profile,
            args.duration,
            args.cameras,
            stop,
            dds_tuning=args.dds_tuning,
            wait_subscribers=args.wait_subscribers,
            rt_priority=args.rt_priority,
            camera_sync=args.camera_sync,
            camera_content=args.camera_content,
            camera_rates=args.camera_rates,
            on_ready=nodes.append,
        )
    except ValueError as e:
        print(f"sim_node: {e}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if args.stats:
        print(json.dumps(stats, separators=(",", ":")), flush=True)
    return 1 if "error" in stats else 0


if __name__ == "__main__":
    sys.exit(main())
