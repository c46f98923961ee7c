"""Fingerprints of each method's smoke-tier run (plan and metrics), pinned so that speed work
cannot change what a method computes. ``python -m tests.speed_reference`` rewrites the data file
(only from code whose plans are known to be right)."""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

from tests.conftest import make_cfg

DATA = Path(__file__).parent / "data" / "speed_reference.json"
METHODS = ("kcp", "spp", "trp", "lapp", "cap", "magnitude", "random")
OVERRIDES = ("target.macs_reduction=0.4", "trainer.precision=32-true", "budget.latency.batch=0")


def fingerprint(tmp_path: Path, method: str) -> dict:
    """Run ``method`` at the smoke tier (seed 0) and fingerprint its plan and test metrics."""
    from prunebench.running.pipeline import Pipeline

    pipe = Pipeline(make_cfg(tmp_path, f"method={method}", *OVERRIDES))
    plans = []
    compress = pipe._compress

    def capture(baseline):
        out = compress(baseline)
        plans.append(out[2])
        return out

    pipe._compress = capture  # type: ignore[method-assign]
    rec = pipe.run()
    # a fingerprint of anything but one ok run with one compress stage would pin nonsense
    assert rec["status"] == "ok" and len(plans) == 1, (method, rec["status"], len(plans))
    plan = json.dumps(plans[0].to_dict(), sort_keys=True)
    return {
        "plan_sha256": hashlib.sha256(plan.encode()).hexdigest(),
        "test": rec["test"],
        "achieved_macs_reduction": rec["achieved_macs_reduction"],
        "compress_seconds": rec["stage_seconds"]["compress"],
    }


if __name__ == "__main__":
    methods = sys.argv[1:] or METHODS
    out = json.loads(DATA.read_text()) if DATA.exists() else {}
    for m in methods:
        with tempfile.TemporaryDirectory() as tmp:
            out[m] = fingerprint(Path(tmp), m)
        print(m, out[m], flush=True)
    DATA.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
