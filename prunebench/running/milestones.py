"""Step-schedule milestones as fractions of a stage's epochs, so tiers that shrink the epochs keep
the schedule's shape; an exact ratio ``"a/b"`` lands a schedule given in epochs of a reference
run (the authors' ``--schedule 81 122`` of 164 epochs) on exactly those epochs."""

from __future__ import annotations

from fractions import Fraction

from prunebench.errors import ConfigError


def milestone_fraction(milestone: float | str) -> float | Fraction:
    """A milestone as a fraction of the stage's epochs: a number, or an exact ratio ``"a/b"``
    (``"81/164"``: after epoch 81 of a 164-epoch run — exactly 81 at 164 epochs, the same share
    of a shorter stage). Raises a ConfigError unless it lies in (0, 1]."""
    try:
        f = Fraction(milestone) if isinstance(milestone, str) else milestone
        ok = 0 < f <= 1
    except (TypeError, ValueError, ZeroDivisionError):
        ok = False
    if not ok:
        raise ConfigError(
            f"recipe milestone {milestone!r}: a fraction of the stage's epochs in (0, 1], "
            "a number (0.5) or a ratio string ('81/164')"
        )
    return f


def milestone_epochs(milestones: tuple[float | str, ...], epochs: int) -> list[int]:
    """The epochs (1 ≤ m < ``epochs``) after which the lr drops, as PyTorch's ``MultiStepLR``
    counts them: each fraction times ``epochs``, rounded to the nearest epoch."""
    out = {round(milestone_fraction(m) * epochs) for m in milestones}
    return sorted({max(1, m) for m in out if m < epochs})
