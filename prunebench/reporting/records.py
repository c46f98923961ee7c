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
    # training-split samples each stage read: {"split": N, "compress": {"seen", "distinct"},
    # "finetune": {...}, "compress_val_passes": validation passes made while compressing}
    "train_samples": (dict,),
    "checkpoint": (str, type(None)),  # the compressed checkpoint (prunebench.load), under runs/
    # a failed run: {"stage", "reason"} (+ "epoch", "step" when training diverged)
    "failure": (dict,),
    "weights_sha256": (str,),  # the compressed model's weights, buffers and plan
    "distributed": (dict,),  # DDP: {"world_size", "weights_sha256": per rank (they agree)}
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


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
