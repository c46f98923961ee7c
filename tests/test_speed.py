"""Speed work that must not change results: the precision default, fp32 evaluation under
mixed precision, the latency trust rule, and (slow) each method's smoke-tier plan pinned."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from torch import nn

from prunebench.errors import ConfigError
from prunebench.running import precision
from prunebench.running.module import fp32
from prunebench.surgery.measure import latency_entry, quartiles, trust


@pytest.mark.parametrize(
    ("value", "has_bf16", "expected"),
    [
        ("auto", True, "bf16-mixed"),
        ("auto", False, "32-true"),
        ("32-true", True, "32-true"),
        ("bf16-mixed", True, "bf16-mixed"),
    ],
)
def test_auto_precision_follows_the_cpu(monkeypatch, value, has_bf16, expected):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: has_bf16)
    assert precision.resolve_precision({"accelerator": "cpu", "precision": value}) == expected


def test_bf16_on_a_cpu_without_bf16_is_one_clear_error(monkeypatch, cfg_factory, tmp_path):
    from prunebench.running.pipeline import Pipeline

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    with pytest.raises(ConfigError, match=r"trainer.precision='bf16-mixed'.*choices here: auto"):
        Pipeline(cfg_factory("trainer.precision=bf16-mixed"))
    assert not (tmp_path / "results").exists()  # refused before anything was written


def test_the_point_id_and_record_carry_the_resolved_precision(monkeypatch, cfg_factory):
    from prunebench.running.pipeline import Pipeline

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    auto = Pipeline(cfg_factory())
    assert auto.cfg["trainer"]["precision"] == "32-true" and auto.precision_chosen == "auto"
    # the same point as an explicit fp32 run: ids of fp32 records made before `auto` hold
    assert auto.point_id == Pipeline(cfg_factory("trainer.precision=32-true")).point_id
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert Pipeline(cfg_factory()).point_id != auto.point_id


def test_fp32_context_turns_autocast_off():
    conv, x = nn.Conv2d(3, 4, 3), torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", torch.bfloat16):
        assert conv(x).dtype == torch.bfloat16
        with fp32((x, None)):
            out = conv(x)
    assert out.dtype == torch.float32 and torch.equal(out, conv(x))


def test_quartiles_match_a_hand_computation():
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 4.0)
    assert quartiles([7.0]) == (7.0, 7.0)


@pytest.mark.parametrize(
    ("self_ratio", "ratios", "ok", "why"),
    [
        (1.02, [2.0, 2.05, 1.95, 2.1, 1.9], True, None),
        (3.90, [3.9, 3.8, 4.0, 3.9, 3.85], False, "dense vs itself ×3.90"),
        (1.00, [1.0, 2.0, 3.0, 4.0, 5.0], False, "ratio IQR 2.00–4.00"),
        (1.00, [2.0, 2.0, 2.0], False, "3 repeats < 5"),
    ],
)
def test_trust_flags_noise(self_ratio, ratios, ok, why):
    got, reason = trust(self_ratio, ratios)
    assert got is ok
    assert (reason is None) if why is None else why in reason


def test_latency_entry_times_dense_against_itself():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3))
    lat = latency_entry(dense, dense, torch.randn(1, 3, 16, 16), repeats=6, warmup=1)
    q1, q3 = lat["speedup_iqr"]
    assert q1 <= q3 and lat["repeats"] == 6
    assert lat["speedup"] == pytest.approx(lat["dense_median_ms"] / lat["compressed_median_ms"])
    assert isinstance(lat["trustworthy"], bool)
    assert (lat["untrusted_reason"] is None) == lat["trustworthy"]
    assert lat["bf16"] is None or lat["bf16"]["speedup"] > 0
    assert statistics.median([q1, q3]) > 0
    json.dumps(lat)  # a record field


# -- cheaper compress stages, same results ---------------------------------------------------
def test_greedy_rank_matches_a_brute_force_greedy_over_the_loss():
    """Every step of the compacting greedy picks the channel a full search over
    ``reconstruction_loss`` picks (15 channels: the working set is compacted three times)."""
    from methods.cap_compensation import InputStats, greedy_rank, reconstruction_loss

    c, ks = 15, 4
    g = torch.Generator().manual_seed(3)
    x = torch.randn(400, c * ks, dtype=torch.float64, generator=g)
    x = x @ torch.randn(c * ks, c * ks, dtype=torch.float64, generator=g)
    stats = InputStats(400, x.sum(0), x.T @ x)
    w = torch.randn(6, c * ks, dtype=torch.float64, generator=g)
    chosen: list[int] = []
    for _ in range(c):

        def loss(t: int) -> float:
            keep = torch.zeros(c, dtype=torch.bool)
            keep[[*chosen, t]] = True
            return reconstruction_loss(w, stats, keep.repeat_interleave(ks))

        chosen.append(min((t for t in range(c) if t not in chosen), key=loss))
    assert greedy_rank(w, stats, ks) == chosen


def test_prefix_cache_gives_the_whole_models_outputs_after_an_edit():
    from prunebench.running.prefix import PrefixCache

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Flatten(),
        nn.Linear(8 * 36, 4),
    ).eval()
    batches = [(torch.randn(5, 3, 6, 6), torch.zeros(5)) for _ in range(2)]
    cache = PrefixCache(model)
    with torch.no_grad():
        for key in (0, 1):
            model[2].weight.mul_(0.5)  # the edited layer: what runs before it is cached
            outs = [o for o, _ in cache.outputs(batches, ["2"], key, "cpu")]
            assert [n.name for n in cache.frontier[0]] == ["_1"]  # the ReLU before it
            assert all(torch.equal(o, model(x)) for o, (x, _) in zip(outs, batches, strict=True))
        model[0].weight.mul_(0.5)  # upstream changed: a new prefix key recomputes the cache
        outs = [o for o, _ in cache.outputs(batches, ["2"], 2, "cpu")]
        assert all(torch.equal(o, model(x)) for o, (x, _) in zip(outs, batches, strict=True))


def test_prefix_cache_falls_back_to_whole_passes_beyond_its_memory_bound():
    from prunebench.running.prefix import PrefixCache

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    cache = PrefixCache(model, max_bytes=10)
    batches = [(torch.randn(3, 4), torch.zeros(3))]
    with torch.no_grad():
        ((out, _),) = cache.outputs(batches, ["2"], 0, "cpu")
        assert cache.frontier is None and torch.equal(out, model(batches[0][0]))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kcp", "spp", "trp", "lapp", "cap", "magnitude", "random"])
def test_smoke_plans_and_metrics_are_those_of_the_code_before_the_speed_work(tmp_path, method):
    """Each method's smoke-tier plan (sha256 of its JSON) and test metrics, seed 0, fp32, as
    ``tests.speed_reference`` recorded them from the code before the speed work."""
    from tests.speed_reference import DATA, fingerprint

    want = json.loads(DATA.read_text())[method]
    got = fingerprint(tmp_path, method)
    assert got["plan_sha256"] == want["plan_sha256"]
    assert got["achieved_macs_reduction"] == pytest.approx(want["achieved_macs_reduction"])
    assert got["test"] == pytest.approx(want["test"], abs=1e-6)
