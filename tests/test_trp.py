"""TRP: energy ranks, projection error, the nuclear sub-gradient, exact factorisation, and the
shared invariants on ResNet-20."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from methods.trp import TRP, TRPHooks
from prunebench.method import CompressContext
from prunebench.surgery.lowrank import (
    SCHEMES,
    SOLVERS,
    as_matrix,
    decompose,
    energy_rank,
    from_matrix,
    macs_fraction_num_den,
    project,
)
from prunebench.surgery.masks import apply_masks
from prunebench.surgery.measure import count_macs
from prunebench.surgery.slim import slim


def _matrix_with_spectrum(s: list[float], rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.double))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g, dtype=torch.double))
    return u[:, : len(s)] @ torch.diag(torch.tensor(s, dtype=torch.double)) @ v[:, : len(s)].T


def test_energy_rank_on_a_known_spectrum():
    s = torch.tensor([4.0, 3.0, 2.0, 1.0])  # energies 16, 9, 4, 1 of 30: 0.533, 0.833, 0.967, 1
    assert [int(energy_rank(s, e)) for e in (0.5, 0.6, 0.9, 0.97, 0.99)] == [1, 2, 3, 4, 4]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_projection_error_and_subgradient(scheme, solver):
    shape = (4, 3, 3, 3)  # channel: 4 × 27; spatial: 9 × 12
    rows, cols = (4, 27) if scheme == "channel" else (9, 12)
    spectrum = [5.0, 3.0, 1.0, 0.5]
    w = from_matrix(_matrix_with_spectrum(spectrum, rows, cols), torch.Size(shape), scheme)
    proj, sub, k = project(
        w.unsqueeze(0), scheme, 0.9, solver=solver
    )  # energies 25, 9, 1, .25: k 2
    assert int(k[0]) == 2
    m = as_matrix(proj[0], scheme)
    assert int(torch.linalg.matrix_rank(m)) == 2
    expected = math.sqrt(1.0**2 + 0.5**2)
    assert float(torch.linalg.norm(as_matrix(w, scheme) - m)) == pytest.approx(expected, rel=1e-9)
    u, s, vh = torch.linalg.svd(as_matrix(w, scheme), full_matrices=False)
    torch.testing.assert_close(as_matrix(sub[0], scheme), u[:, :2] @ vh[:2])


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("stride", "padding", "bias"), [(1, 1, True), (2, 1, False), (1, 0, True)])
def test_full_rank_factorisation_is_exact(scheme, stride, padding, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, stride, padding, bias=bias).double()
    full = min(as_matrix(conv.weight, scheme).shape)
    x = torch.randn(2, 5, 9, 9, dtype=torch.double)
    torch.testing.assert_close(decompose(conv, full, scheme)(x), conv(x))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_rank_r_output_is_the_truncated_conv(scheme):
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 8, 3, 1, 1).double()
    m = as_matrix(conv.weight.detach(), scheme)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    r = 3
    truncated = copy.deepcopy(conv)
    truncated.weight.data = from_matrix((u[:, :r] * s[:r]) @ vh[:r], conv.weight.shape, scheme)
    x = torch.randn(2, 6, 7, 7, dtype=torch.double)
    torch.testing.assert_close(decompose(conv, r, scheme)(x), truncated(x))
    # The weight error is what the dropped singular values predict.
    err = float(torch.linalg.norm(as_matrix(truncated.weight.detach(), scheme) - m))
    assert err == pytest.approx(float(s[r:].square().sum().sqrt()), rel=1e-9)


def test_hooks_project_and_add_lambda_subgradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
    w0 = model[1].weight.detach().clone()
    hooks = TRPHooks(["1"], "channel", 0.9, 3e-4, period=2)
    hooks.batch_start(model, step=1)  # not a projection step
    assert torch.equal(model[1].weight, w0)
    hooks.batch_start(model, step=2)
    proj, sub, _ = project(w0.unsqueeze(0), "channel", 0.9)
    torch.testing.assert_close(model[1].weight.detach(), proj[0])
    model[1].weight.grad = torch.zeros_like(w0)
    hooks.before_optimizer_step(model, step=2)
    torch.testing.assert_close(model[1].weight.grad, 3e-4 * sub[0])


@pytest.mark.parametrize(("scheme", "mode"), [("channel", "value"), ("spatial", "macs_target")])
def test_shared_invariants_on_resnet20(scheme, mode):
    from tests.test_slim import X, _trained_like

    model = _trained_like(20)
    roots = [n for n, _ in model.named_modules() if n.startswith("layer") and n.endswith(".conv1")]
    ctx = CompressContext.build(model, X, roots, ["conv1", "fc"], 0.5, compress_epochs=0)
    method = TRP(scheme=scheme, mode=mode, threshold=1.4)  # random init: σ ≈ 0.9–1.9
    plan = method.compress(ctx)
    assert plan.to_dict() == method.compress(ctx).to_dict()
    layers = set(method.layers(ctx))
    assert set(plan.entries) <= layers and "conv1" not in plan.entries
    assert all(ctx.structure.strides[n] == (1, 1) for n in plan.entries)  # stride-2 stay whole
    slimmed = slim(model, plan, X, ctx.structure).eval()
    counted = count_macs(slimmed, X).total
    assert counted == ctx.mac_model.plan_macs(plan) < ctx.mac_model.dense_total
    if mode == "macs_target":
        assert abs(1 - counted / ctx.mac_model.dense_total - 0.5) <= 0.01
    masked = apply_masks(copy.deepcopy(model), plan, ctx.structure).eval()
    xs = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(slimmed(xs), masked(xs), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(slimmed.conv1.weight, model.conv1.weight)
    assert isinstance(slimmed.get_submodule(next(iter(plan.entries))), nn.Sequential)


@pytest.mark.parametrize(("stride", "padding", "bias"), [(1, 1, True), (2, 1, False)])
def test_3d_channel_factorisation_full_rank_exact_and_rank_r_truncated(stride, padding, bias):
    """Our extension to 3D convs (PSMNet's cost volume): W (N, C, kd, kh, kw) as N × (C·k³)."""
    torch.manual_seed(2)
    conv = nn.Conv3d(5, 7, 3, stride, padding, bias=bias).double()
    x = torch.randn(2, 5, 6, 7, 7, dtype=torch.double)
    m = as_matrix(conv.weight.detach(), "channel", kdims=3)
    assert m.shape == (7, 5 * 27)
    torch.testing.assert_close(decompose(conv, 7, "channel")(x), conv(x))
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    truncated = copy.deepcopy(conv)
    truncated.weight.data = from_matrix((u[:, :3] * s[:3]) @ vh[:3], conv.weight.shape, "channel")
    pair = decompose(conv, 3, "channel")
    assert isinstance(pair[0], nn.Conv3d) and pair[1].kernel_size == (1, 1, 1)
    torch.testing.assert_close(pair(x), truncated(x))
    # MACs of the pair over the conv's: r·(C·27 + N) / (N·C·27) = 3·142 / 945
    assert macs_fraction_num_den((7, 5, 3, 3, 3), 3, "channel") == (426, 945)
    counted = count_macs(pair.float(), x[:1].float()).total
    assert counted * 945 == count_macs(conv.float(), x[:1].float()).total * 426


def test_3d_spatial_scheme_is_refused():
    with pytest.raises(ValueError, match="spatial is 2D only"):
        as_matrix(torch.zeros(4, 3, 3, 3, 3), "spatial", kdims=3)


def test_trp_reaches_psmnets_3d_convs_and_masked_equals_slimmed():
    from tests.test_stereo import _task

    task = _task(tier="smoke")
    torch.manual_seed(0)
    model = task.build_model().double().eval()
    x = torch.randn(2, 6, 32, 64, dtype=torch.float64)
    ctx = CompressContext.build(
        model, x[:1], task.prunable_layers(model), task.protected_layers(model), 0.5
    )
    method = TRP(mode="macs_target")
    threed = [n for n in method.layers(ctx) if len(ctx.structure.kernel_sizes[n]) == 3]
    assert threed and not [n for n in TRP(scheme="spatial").layers(ctx) if n in threed]
    plan = method.compress(ctx)
    assert set(plan.entries) & set(threed)  # the cost-volume convs are factorised
    slimmed = slim(model, plan, x[:1], ctx.structure).eval()
    counted = count_macs(slimmed, x[:1]).total
    assert counted == ctx.mac_model.plan_macs(plan)
    assert abs(1 - counted / ctx.mac_model.dense_total - 0.5) <= 0.01
    masked = apply_masks(copy.deepcopy(model), plan, ctx.structure).eval()
    with torch.no_grad():
        torch.testing.assert_close(slimmed(x), masked(x), rtol=1e-6, atol=1e-6)


def test_a_float32_svd_that_does_not_converge_is_retried_in_float64(monkeypatch):
    w = torch.randn(2, 6, 4, 3, 3, generator=torch.Generator().manual_seed(3))
    expected = project(w, "channel", 0.9)
    real = torch.linalg.svd
    calls = []

    def flaky(m, full_matrices=True):
        calls.append(m.dtype)
        if m.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.svd: the algorithm failed to converge")
        return real(m, full_matrices=full_matrices)

    monkeypatch.setattr(torch.linalg, "svd", flaky)
    proj, sub, k = project(w, "channel", 0.9)
    assert calls == [torch.float32, torch.float64] and proj.dtype == torch.float32
    torch.testing.assert_close(proj, expected[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(k, expected[2])


@pytest.mark.parametrize(
    ("shape", "scheme"),
    [
        ((3, 64, 32, 3, 3), "channel"),
        ((2, 16, 64, 3, 3), "spatial"),
        ((2, 300, 8, 3, 3), "channel"),
    ],
)  # wide 64 × 288; tall 192 × 48 and 300 × 72 (through the transpose)
def test_the_gram_solver_is_as_close_to_the_exact_projection_as_the_float32_svd(shape, scheme):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(5))
    exact = project(w.double(), scheme, 0.9)  # float64 SVD: the reference
    direct, gram = project(w, scheme, 0.9), project(w, scheme, 0.9, solver="gram")
    assert torch.equal(gram[2], exact[2]) and torch.equal(direct[2], exact[2])
    for i in (0, 1):  # the projection, the sub-gradient U_k V_kᵀ
        ref = exact[i].float()
        err_direct = float((direct[i] - ref).norm() / ref.norm())
        err_gram = float((gram[i] - ref).norm() / ref.norm())
        assert err_gram < 2e-5 and err_gram < 20 * err_direct, (i, err_gram, err_direct)
    with pytest.raises(ValueError, match="solver 'qr': choices are direct, gram"):
        project(w, scheme, 0.9, solver="qr")


def test_trp_svd_gram_trains_like_direct_and_keeps_old_point_ids():
    from prunebench.running.pipeline import point_id

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 24, 3), nn.Conv2d(24, 16, 3))
    twin = copy.deepcopy(model)
    layers = ["1", "2"]
    for m, svd in ((model, "direct"), (twin, "gram")):
        TRPHooks(layers, "channel", 0.9, 3e-4, 1, svd).batch_start(m, 0)
    for name in layers:
        a, b = model.get_submodule(name).weight, twin.get_submodule(name).weight
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    with pytest.raises(Exception, match="svd.*qr.*direct.*gram"):
        TRP(svd="qr")
    cfg = {
        "task": {"name": "t"}, "method": {"name": "trp", "e": 0.9}, "seed": 0,
        "budget": {"name": "cpu"}, "data": {"source": "embedded"},
        "target": {"macs_reduction": 0.5, "round_to": 1},
    }  # fmt: skip
    before = point_id(cfg)  # a record made before the option has no method.svd
    assert point_id({**cfg, "method": {**cfg["method"], "svd": "direct"}}) == before
    assert point_id({**cfg, "method": {**cfg["method"], "svd": "gram"}}) != before


class _Stop(Exception):
    pass


def _compress_stage_lrs(tmp_path, *overrides: str) -> list[float]:
    """The lr of every epoch of TRP's compress stage, as the run config resolves it: the recipe
    and overrides TRP hands to ``ctx.train``, through the LightningModule's own scheduler."""
    import dataclasses
    from types import SimpleNamespace

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from prunebench.running.module import PruneModule
    from tests.conftest import make_cfg

    cfg = OmegaConf.to_container(
        make_cfg(tmp_path, "task=cifar10_resnet20", "method=trp", *overrides), resolve=True
    )
    task = instantiate(cfg["task"], _convert_="all")
    method = instantiate({k: v for k, v in cfg["method"].items() if k != "name"})
    model = task.build_model()
    ctx = CompressContext.build(
        model,
        task.example_input(),
        task.prunable_layers(model),
        task.protected_layers(model),
        0.5,
        compress_epochs=cfg["budget"]["compress_epochs"],
    )
    calls = []

    def train(epochs, hooks=None, recipe="finetune", **changes):
        calls.append((epochs, recipe, changes))
        raise _Stop

    ctx.train = train
    with pytest.raises(_Stop):
        method.compress(ctx)
    ((epochs, recipe, changes),) = calls
    spec = dataclasses.replace(task.recipe[recipe], **changes)
    module = PruneModule(model, task, spec, "compress")
    module._trainer = SimpleNamespace(max_epochs=epochs)
    sched_cfg = module.configure_optimizers()
    opt, sched = sched_cfg["optimizer"], sched_cfg["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_paper_tier_scratch_run_drops_the_lr_after_epochs_81_and_122(tmp_path):
    # The authors' CIFAR run: 164 epochs at lr 0.1, ÷10 after epochs 81 and 122 (MultiStepLR
    # [81, 122]; 0-based epochs 0–80 at 0.1, 81–121 at 0.01, 122–163 at 0.001).
    lrs = _compress_stage_lrs(tmp_path, "budget=paper", "method.start=scratch")
    assert len(lrs) == 164
    assert lrs[:81] == pytest.approx([0.1] * 81)
    assert lrs[81:122] == pytest.approx([0.01] * 41)
    assert lrs[122:] == pytest.approx([0.001] * 42)
    # a shrunk tier keeps the shares: 4 epochs → drops after epochs 2 and 3
    shrunk = ("budget=cpu", "budget.compress_epochs=4", "method.start=scratch")
    assert _compress_stage_lrs(tmp_path, *shrunk) == pytest.approx([0.1, 0.1, 0.01, 0.001])
    # the benchmark's start: the task's finetune recipe from the baseline (lr 0.01, ÷10 at 82, 123)
    lrs = _compress_stage_lrs(tmp_path, "budget=paper")
    assert lrs[81] == pytest.approx(0.01) and lrs[82] == pytest.approx(0.001)
    assert lrs[123] == pytest.approx(0.0001)


def test_milestone_ratios_are_exact_and_bad_ones_are_refused():
    from prunebench.errors import ConfigError
    from prunebench.running.milestones import milestone_epochs

    assert milestone_epochs(("81/164", "122/164"), 164) == [81, 122]
    assert milestone_epochs((0.5, 0.75), 164) == [82, 123]  # the plain shares land one later
    assert milestone_epochs(("1/3", "2/3"), 90) == [30, 60]
    assert milestone_epochs((0.5, "1/1"), 4) == [2]  # a drop at the very end is dropped
    for bad in ("81/0", "164/81", "abc", -0.1):
        with pytest.raises(ConfigError, match="recipe milestone"):
            milestone_epochs((bad,), 10)
