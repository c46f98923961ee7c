"""Records: schema validation names the bad field; writes are atomic and never clobber on error."""

from __future__ import annotations

import json

import pytest

from prunebench.errors import RecordError
from prunebench.reporting.records import (
    SCHEMA,
    SCHEMA_VERSION,
    read_record,
    validate,
    write_atomic,
    write_record,
)


def minimal_record(**over) -> dict:
    rec = {
        "schema_version": SCHEMA_VERSION,
        "run_id": "r",
        "point_id": "p",
        "time": "t",
        "git_commit": None,
        "status": "ok",
        "failure_reason": None,
        "task": "cifar10_resnet20",
        "method": "magnitude",
        "method_hparams": {},
        "seed": 0,
        "budget": "smoke",
        "data_source": "embedded",
        "target_macs_reduction": 0.5,
        "achieved_macs_reduction": 0.5,
        "baseline": {"hash": "h", "recipe_hash": "r", "source": "trained", "test": {}},
        "metric": "test/top1",
        "higher_is_better": True,
        "test": {"test/top1": 0.5},
        "macs": {"dense": 2, "compressed": 1},
        "params": {"dense": 2, "compressed": 1},
        "latency": None,
        "stage_seconds": {},
        "plan_widths": {},
        "wandb": None,
        "config": {},
    }
    rec.update(over)
    return rec


def test_minimal_record_round_trips(tmp_path):
    assert set(minimal_record()) == set(SCHEMA)
    path = write_record(minimal_record(), tmp_path / "a" / "r.json")
    assert read_record(path)["achieved_macs_reduction"] == 0.5
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp file left


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"seed": "0"}, "field 'seed'"),
        ({"status": "meh"}, "status='meh'"),
        ({"schema_version": 99}, "schema_version=99"),
        ({"macs": {"dense": 1}}, "macs.compressed"),
    ],
)
def test_validation_names_the_bad_field(over, message):
    with pytest.raises(RecordError, match=message):
        validate(minimal_record(**over))


def test_invalid_record_does_not_overwrite_a_good_one(tmp_path):
    path = write_record(minimal_record(), tmp_path / "r.json")
    before = path.read_text()
    with pytest.raises(RecordError):
        write_record(minimal_record(seed=None), path)
    assert path.read_text() == before


def test_atomic_write_failure_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"old": True}))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        write_atomic(path, "{}")
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_unreadable_record_is_named(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(RecordError, match="broken.json"):
        read_record(bad)
