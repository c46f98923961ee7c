"""The errors a user can cause, each with a one-line message naming the bad value and the choices."""

from __future__ import annotations

from omegaconf.errors import OmegaConfBaseException


class PrunebenchError(Exception):
    """Base class: ``run.py`` prints these as one line and exits with status 2."""


class ConfigError(PrunebenchError):
    """A configuration value is outside what the suite accepts."""


class DataError(PrunebenchError):
    """A dataset root is missing or does not have the expected layout."""


class RecordError(PrunebenchError):
    """A run record does not match the schema."""


class TrainingDiverged(RuntimeError):
    """The training loss, or a weight the stage kept, became NaN or infinite. Not an input
    error: the run stops with a ``failed`` record naming the stage, epoch and step (``run.py``
    exits with status 3)."""

    def __init__(self, stage: str, epoch: int, step: int, loss: float, what: str = "loss") -> None:
        self.stage, self.epoch, self.step, self.loss = stage, epoch, step, loss
        super().__init__(
            f"{stage} {what} became {loss} at epoch {epoch}, step {step} "
            "(diverged: lower the learning rate?)"
        )


def one_line(exc: BaseException) -> str:
    """A Hydra or OmegaConf error (and the cause Hydra prints under it) as one line, naming the
    key where OmegaConf knows it (``seed: Interpolation key 'foo' not found``)."""
    text = str(exc).split("Config search path")[0]  # Hydra's search path: no help to a user
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if isinstance(exc, OmegaConfBaseException) and getattr(exc, "full_key", None):
        return f"{exc.full_key}: {lines[0]}"
    if isinstance(exc.__cause__, OmegaConfBaseException):
        lines.append(str(exc.__cause__).splitlines()[0].strip())
    out, listing = lines[0], False
    for ln in lines[1:]:  # "Available options in 'method':" then one choice a line
        out += (" " if not listing or out.endswith(":") else ", ") + ln
        listing = listing or ln.endswith(":")
    return out
