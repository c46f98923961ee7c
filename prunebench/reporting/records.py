"""The run record: one JSON file per finished run, schema-versioned, validated, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from filelock import FileLock

from prunebench.errors import RecordError

SCHEMA_VERSION = 1

# field → accepted types (None allowed where listed). Nested dicts are checked one level down.
# Optional: "method_notes" (dict, ``Method.notes()``: how the method's schedule ended).
SCHEMA: dict[str, tuple] = {
    "schema_version": (int,),
    "run_id": (str,),
    "point_id": (str,),
    "time": (str,),
    "git_commit": (str, type(None)),
    "status": (str,),
    "failure_reason": (str, type(None)),
    "task": (str,),
    "method": (str,),
    "method_hparams": (dict,),
    "seed": (int,),
    "budget": (str,),
    "data_source": (str,),
    "target_macs_reduction": (float, int, type(None)),  # None: the method sets its own
    "achieved_macs_reduction": (float, int),
    "baseline": (dict,),
    "metric": (str,),
    "higher_is_better": (bool,),
    "test": (dict,),
    "macs": (dict,),
    "params": (dict,),
    "latency": (dict, type(None)),
    "stage_seconds": (dict,),
    "plan_widths": (dict,),
    "wandb": (dict, type(None)),
    "config": (dict,),
}
# Fields added after schema 1 was first written: checked when present (older records lack them).
OPTIONAL: dict[str, tuple] = {
    "finetune_epochs": (int,),  # epochs the finetune stage ran (0: none)
    # budget.finetune_samples: the finetune length in samples (null: budget.finetune_epochs)
    "finetune_samples": (int, type(None)),
    "method_start": (str,),  # "baseline" or "scratch" (a fresh initialisation, e.g. LAPP)
    # training-split samples each stage read: {"split": N, "compress": {"seen", "distinct"},
    # "finetune": {...}, "compress_val_passes": validation passes made while compressing}
    "train_samples": (dict,),
    # the compressed checkpoint (prunebench.load), relative to paths.runs_dir (older records: an
    # absolute path); checkpoint_file() finds it
    "checkpoint": (str, type(None)),
    # a failed run: {"stage", "reason"} (+ "epoch", "step" when training diverged)
    "failure": (dict,),
    "weights_sha256": (str,),  # the compressed model's weights, buffers and plan
    # a stage resumed after a kill: {stage: {"from_epoch", "seconds_before"}}; stage_seconds
    # counts the whole stage, seconds_before of it in the killed run(s)
    "resumed": (dict,),
    # {"training": the resolved trainer.precision, "chosen_by": "auto"|"config",
    #  "evaluation": "32-true"} (prunebench.running.precision)
    "precision": (dict,),
    "distributed": (dict,),  # DDP: {"world_size", "weights_sha256": per rank (they agree)}
    # {"torch", "threads": intra-op threads, "cpu": processor, "gpu" when trained on one}
    # (prunebench.running.provenance.environment); the baseline block's "trained_by" holds the
    # same for the run that trained the cached baseline, with its "git_commit" and "time"
    "environment": (dict,),
}
NESTED = {
    "baseline": ("hash", "recipe_hash", "source", "test"),
    "macs": ("dense", "compressed"),
    "params": ("dense", "compressed"),
}
STATUSES = ("ok", "failed")


def validate(record: dict[str, Any], where: str = "record") -> dict[str, Any]:
    """Check ``record`` against the schema; raise :class:`RecordError` naming the first bad field."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: not a JSON object")
    if record.get("schema_version") != SCHEMA_VERSION:
        raise RecordError(
            f"{where}: schema_version={record.get('schema_version')!r}, expected {SCHEMA_VERSION}"
        )
    for key, types in SCHEMA.items():
        if key not in record:
            raise RecordError(f"{where}: missing field {key!r}")
        if not isinstance(record[key], types) or (
            isinstance(record[key], bool) and bool not in types
        ):
            raise RecordError(f"{where}: field {key!r} has type {type(record[key]).__name__}")
    for key, types in OPTIONAL.items():
        if key in record and (not isinstance(record[key], types) or isinstance(record[key], bool)):
            raise RecordError(f"{where}: field {key!r} has type {type(record[key]).__name__}")
    for key, subkeys in NESTED.items():
        for sub in subkeys:
            if sub not in record[key]:
                raise RecordError(f"{where}: missing field {key}.{sub}")
    if record["status"] not in STATUSES:
        raise RecordError(f"{where}: status={record['status']!r}; choices: {STATUSES}")
    return record


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; set it straight back
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() honours the umask
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_lock(path: str | Path) -> FileLock:
    """An inter-process lock for ``path`` (a hidden ``.<name>.lock`` file beside it): two
    processes — two sweeps on one results directory — never build or write it at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path.parent / f".{path.name}.lock")


def write_record(record: dict[str, Any], path: str | Path) -> Path:
    """Validate and write a record atomically."""
    validate(record, str(path))
    write_atomic(path, json.dumps(record, indent=1, sort_keys=True))
    return Path(path)


def read_record(path: str | Path) -> dict[str, Any]:
    """Read and validate one record."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path}: unreadable ({exc})") from exc
    return validate(data, str(path))


def checkpoint_file(record: dict[str, Any], runs_dir: str | Path | None = None) -> Path:
    """The record's compressed checkpoint on this machine: its ``checkpoint`` path under
    ``runs_dir`` (default: the record's own ``paths.runs_dir``). An older record's absolute
    path is used if it exists, else its ``checkpoints/…`` tail under ``runs_dir``. Raises
    :class:`RecordError` naming the run command that recreates it when it is not here."""
    name = record.get("checkpoint")
    if not name:
        raise RecordError("the record names no checkpoint (made before checkpoints were saved)")
    root = Path(runs_dir or record["config"]["paths"]["runs_dir"])
    path = Path(name)
    if path.is_absolute():
        if path.exists():
            return path
        tail = path.parts[path.parts.index("checkpoints") :] if "checkpoints" in path.parts else ()
        path = Path(*tail) if tail else path
    found = root / path if not path.is_absolute() else path
    if found.exists():
        return found
    raise RecordError(
        f"its checkpoint {found} is not on this machine (checkpoints stay under paths.runs_dir, "
        f"out of git); recreate it with: {recreate_command(record)}"
    )


def recreate_command(record: dict[str, Any]) -> str:
    """The ``run.py`` command line that reruns a record's point (its method options written
    out, so the point is the same)."""
    cfg = record["config"]
    method = {k: v for k, v in cfg["method"].items() if k not in ("_target_", "name")}
    options = " ".join(f"method.{k}={json.dumps(v)}" for k, v in method.items())
    return (
        f"python run.py task={cfg['task']['name']} method={cfg['method']['name']} "
        f"target.macs_reduction={cfg['target']['macs_reduction']} seed={cfg['seed']} "
        f"budget={cfg['budget']['name']} data={cfg['data']['source']} {options} force=true"
    ).strip()
