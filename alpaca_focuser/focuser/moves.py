"""The geometry of a move, as pure functions: the client's frame against the motor's, and backlash legs.

Everything a client sees (Position, Move targets, clamping, MaxIncrement, the backlash direction, SyncPosition)
is in the client's frame; only the driver sees motor positions. With ``reverse`` the two frames are mirror
images: client position ``p`` is motor position ``span - p``, where ``span`` is MaxStep for an absolute focuser
and the controller's own counter limit for a relative one (whose position nobody sees, so only the direction of
its moves changes).
"""

from __future__ import annotations

from dataclasses import dataclass

OUT, IN = "out", "in"


@dataclass(frozen=True)
class Frame:
    """The mapping between client and motor positions. It is its own inverse."""

    span: int  # MaxStep (absolute) or the driver's highest position (relative)
    reverse: bool

    def to_motor(self, client: int) -> int:
        return self.span - client if self.reverse else client

    def to_client(self, motor: int) -> int:
        return self.span - motor if self.reverse else motor


def plan_legs(current: int, target: int, backlash_steps: int, approach: str, low: int, high: int) -> list[int]:
    """The positions (client frame) a move from ``current`` to ``target`` visits, the last one being ``target``.

    A move that ends travelling against the approach direction (``"out"``: increasing position) first overshoots
    the target by ``backlash_steps`` and then comes back, so every move ends travelling the same way and the gear
    train's slack is always taken up on the same side. The overshoot is clamped to ``low..high``: near a limit
    the second leg is shorter, and a target on the limit itself gets no second leg at all.
    """
    if backlash_steps <= 0 or target == current:
        return [target]
    travelling_out = target > current
    if travelling_out == (approach == OUT):
        return [target]
    overshoot = target + backlash_steps if travelling_out else target - backlash_steps
    overshoot = min(max(overshoot, low), high)
    return [target] if overshoot == target else [overshoot, target]


def describe_legs(legs: list[int], frame: Frame) -> str:
    """Legs for the log, with the motor positions when they differ from the client's."""
    parts = [str(p) if not frame.reverse else f"{p} (motor {frame.to_motor(p)})" for p in legs]
    return " then ".join(parts)
