"""A receive loop of its own for the recorded subscriptions ("xsq-rx" thread).

Why: at 3x720p30 raw + 4 x 500 Hz control topics, rclpy's ``SingleThreadedExecutor`` spent
about half of its thread rebuilding the wait set, scanning every entity and wrapping each
message in a Task (~77 us CPU per message on the 2-core VM we measure on); that thread
was saturated and DDS dropped what it could not take in time (issue 12). This loop keeps the
subscription handles entered, waits on one rcl wait set and takes every waiting message of
a ready subscription (up to ``DRAIN_LIMIT``) straight into the recorder callback, with the
``MessageInfo`` rclpy gives (sequence numbers, timestamps).

The subscriptions stay ordinary node subscriptions (graph, QoS, ``ros2 node info``) in a
callback group the node's executor never runs (:class:`PumpedGroup`), so each message is
taken by exactly one thread. Timers and services stay on the executor.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Final

from rclpy.callback_groups import CallbackGroup
from rclpy.context import Context
from rclpy.exceptions import InvalidHandle
from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.subscription import Subscription

from xsquare_logger.recording.recorder import RawCallback

__all__ = ["DRAIN_LIMIT", "PumpedGroup", "SubscriptionPump"]

log = logging.getLogger(__name__)

#: Messages taken from one ready subscription per wake-up (fairness bound between topics).
DRAIN_LIMIT: Final = 32

#: How long one wait may block (ns): bounds how late ``stop`` is seen if no wake-up came.
_WAIT_NS: Final = 200_000_000

class PumpedGroup(CallbackGroup):
    """The callback group of pumped subscriptions: the executor never runs them (it does
    not even put them in its wait set), because :class:`SubscriptionPump` takes them."""

    def can_execute(self, entity: Any) -> bool:
        return False

    def beginning_execution(self, entity: Any) -> bool:
        return False

    def ending_execution(self, entity: Any) -> None:
        return None


class SubscriptionPump:
    """Takes the messages of the subscriptions :meth:`add`-ed to it on one thread.

    ``add``/``remove`` may be called from any thread; ``remove(..., wait=True)`` returns
    once the loop no longer uses the subscription (no callback of it runs after that), so
    it can be destroyed. ``stop`` ends the thread; call it before the node is destroyed.
    """

    def __init__(self, context: Context, name: str = "xsq-rx") -> None:
        self._context = context
        self._name = name
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wanted: dict[Subscription[Any], RawCallback] = {}
        self._generation = 0  # bumped by every add/remove
        self._applied = 0  # the generation the loop runs with
        self._stopping = False
        self._wake = GuardCondition(None, None, context=context)
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # -- any thread -----------------------------------------------------------------------
    def add(self, sub: Subscription[Any], callback: RawCallback) -> None:
        with self._lock:
            self._wanted[sub] = callback
            self._generation += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._wake.trigger()

    def remove(self, subs: list[Subscription[Any]], wait: bool = True) -> None:
        with self._lock:
            for sub in subs:
                self._wanted.pop(sub, None)
            self._generation += 1
            target = self._generation
        self._wake.trigger()
        if wait:
            self._wait_applied(target)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            thread, self._thread = self._thread, None
        self._wake.trigger()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with contextlib.suppress(InvalidHandle):
            self._wake.destroy()

    def _wait_applied(self, target: int) -> None:
        with self._changed:
            while (
                self._applied < target
                and self._thread is not None
                and self._thread is not threading.current_thread()
                and self._thread.is_alive()
            ):
                self._changed.wait(0.1)

    # -- the pump thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            if not self._context.ok():
                return  # rclpy shut down under the loop (process ending): nothing to report
            # A callback's error must not pass silently: spin_until_stopped raises it.
            self.error = exc
            log.exception("receive loop %s stopped", self._name)
        finally:
            with self._changed:
                self._applied = self._generation
                self._changed.notify_all()

    def _loop(self) -> None:
        held = contextlib.ExitStack()
        entries: list[tuple[Any, Any, RawCallback]] = []
        wait_set: Any = None
        try:
            while True:
                with self._lock:
                    if self._stopping:
                        return
                    rebuild = self._applied != self._generation
                    if rebuild:
                        wanted = dict(self._wanted)
                        generation = self._generation
                if rebuild:
                    # Release the old handles first: a removed subscription's deferred
                    # destruction happens here, on this thread, after its last take.
                    held.close()
                    held = contextlib.ExitStack()
                    entries = []
                    for sub, callback in wanted.items():
                        try:
                            held.enter_context(sub.handle)
                        except InvalidHandle:
                            continue  # destroyed before the loop saw it
                        entries.append((sub.handle, sub.msg_type, callback))
                    held.enter_context(self._wake.handle)
                    context = self._context.handle
                    if context is None:
                        return  # the context is gone: nothing more to receive
                    held.enter_context(context)
                    wait_set = _rclpy.WaitSet(len(entries), 1, 0, 0, 0, 0, context)
                    with self._changed:
                        self._applied = generation
                        self._changed.notify_all()
                wait_set.clear_entities()
                for handle, _type, _cb in entries:
                    wait_set.add_subscription(handle)
                wait_set.add_guard_condition(self._wake.handle)
                wait_set.wait(_WAIT_NS)
                if not self._context.ok():
                    return
                for index, (handle, msg_type, callback) in enumerate(entries):
                    if not wait_set.is_ready("subscription", index):
                        continue
                    take = handle.take_message
                    for _ in range(DRAIN_LIMIT):
                        taken = take(msg_type, True)
                        if taken is None:
                            break
                        callback(*taken)
        finally:
            held.close()
