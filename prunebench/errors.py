"""The errors a user can cause, each with a one-line message naming the bad value and the choices."""


class PrunebenchError(Exception):
    """Base class: ``run.py`` prints these as one line and exits with status 2."""


class ConfigError(PrunebenchError):
    """A configuration value is outside what the suite accepts."""


class DataError(PrunebenchError):
    """A dataset root is missing or does not have the expected layout."""


class RecordError(PrunebenchError):
    """A run record does not match the schema."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite. Not an input error: the run stops with a
    ``failed`` record naming the stage, epoch and step (``run.py`` exits with status 3)."""

    def __init__(self, stage: str, epoch: int, step: int, loss: float) -> None:
        self.stage, self.epoch, self.step, self.loss = stage, epoch, step, loss
        super().__init__(
            f"{stage} loss became {loss} at epoch {epoch}, step {step} "
            "(diverged: lower the learning rate?)"
        )
