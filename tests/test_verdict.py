"""The claims section's verdicts on hand-made records: proxies are never reproductions, the
tolerance rule is exact, and a row must be at the claim's MACs and hyper-parameters."""

from __future__ import annotations

import pytest

from prunebench.reporting.claims import load_claims
from prunebench.reporting.leaderboard import aggregate
from prunebench.reporting.markdown import render_markdown
from prunebench.reporting.verdict import judge
from tests.test_leaderboard import CLAIMS, rec

CLAIM = {
    "task": "cifar10_resnet20",
    "hparams": {"scheme": "channel"},
    "source": "test",
    "verified": "V",
    "metric": "top-1",
    "baseline": None,
    "value": None,
    "delta": -1.24,
    "reduction": {"quantity": "speedup", "value": 2.0, "bound": "="},  # → −50 % MACs
    "convention": "speedup_conv_macs",
    "words": "2x at −1.24 pt",
}


def trp(top1: float, budget: str = "paper", data: str = "disk", target: float = 0.5, **kw):
    hp = kw.pop("hparams", {"scheme": "channel"})
    return [
        rec(
            "trp",
            s,
            top1 + s / 1000,
            0.9 + s / 1000,
            budget,
            data,
            target=target,
            method_hparams=hp,
        )
        for s in range(3)
    ]


@pytest.mark.parametrize(
    ("records", "words"),
    [
        (trp(0.885), "reproduced"),  # Δ −1.50 pt: 0.26 pt short of −1.24, within 0.5
        (trp(0.880), "not reproduced (0.76 pt short)"),  # Δ −2.00 pt
        (trp(0.895), "reproduced"),  # better than claimed
        (trp(0.895, "cpu", "embedded"), "not run at the paper tier (proxy rows only)"),
        (trp(0.895, target=0.4), "not run at the paper tier"),  # not at the claim's MACs
        (trp(0.895, hparams={"scheme": "spatial"}), "not run at the paper tier"),
    ],
)
def test_verdict_words(records, words):
    v = judge("trp", CLAIM, aggregate(records))
    assert v.words == words


def test_proxy_evidence_is_labelled_and_paper_rows_are_not():
    v = judge("trp", CLAIM, aggregate(trp(0.885, "cpu", "embedded") + trp(0.885)))
    shown = render_markdown(aggregate(trp(0.885, "cpu", "embedded")), {"methods": {}}, [])
    assert sorted(k for k, _ in v.evidence) == [
        ("cifar10_resnet20", "disk", "paper"),
        ("cifar10_resnet20", "embedded", "cpu"),
    ]
    assert v.words == "reproduced"
    assert "## Paper claims and verdicts" in shown


def test_other_metric_and_modelless_claims():
    top5 = {**CLAIM, "metric": "top-5 error (Caffe baseline)"}
    assert judge("trp", top5, aggregate(trp(0.885))).words.endswith("no Δ in our metric")
    modelless = {**CLAIM, "task": None, "model": "AlexNet"}
    assert judge("trp", modelless, aggregate(trp(0.885))).words == "no task here builds this model"


def test_published_claims_section_lists_every_claim_once():
    claims = load_claims(CLAIMS)
    text = render_markdown(aggregate(trp(0.885, "cpu", "embedded", target=0.537)), claims, [])
    section = text.split("## Paper claims and verdicts", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    n = sum(len(m["claims"]) for m in claims["methods"].values() if isinstance(m["claims"], list))
    assert len(rows) == n + 1  # + the header
    assert "cpu/embedded: -1.50 ± 0.00 pt at −53.9 % (3) — proxy" in section
