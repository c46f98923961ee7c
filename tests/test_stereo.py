"""Stereo (PSMNet): the paper model's MACs and params, the metrics on hand-made maps, the disk
readers and splits on files written here, input-shape errors, the embedded renderer's geometry,
and every method and control at the smoke tier on the embedded pairs."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from PIL import Image

from methods.cap_compensation import patch_vectors
from methods.magnitude import Magnitude
from prunebench.errors import ConfigError
from prunebench.method import CompressContext
from prunebench.reporting.records import checkpoint_file
from prunebench.running.checkpoint import load
from prunebench.running.module import make_optimizer
from prunebench.running.pipeline import Pipeline
from prunebench.surgery.bypass import Bypassed, make_bypass
from prunebench.surgery.masks import apply_masks
from prunebench.surgery.measure import count_macs, count_params
from prunebench.surgery.slim import slim
from prunebench.task import OptimSpec
from tasks.stereo.data import window
from tasks.stereo.disk import kitti2015_lists, sceneflow_lists
from tasks.stereo.embedded import motorcycle, render_pair
from tasks.stereo.io import read_kitti_disparity, read_pfm
from tasks.stereo.metrics import stereo_loss, stereo_metrics
from tasks.stereo.psmnet import PSMNet
from tests.conftest import ROOT, make_cfg

METHODS = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))


def _task(stem: str = "stereo_psmnet_sceneflow", **over):
    cfg = yaml.safe_load((ROOT / "conf" / "task" / f"{stem}.yaml").read_text())
    return instantiate({**cfg, **over}, _convert_="all")


def test_paper_model_macs_and_params():
    # 256×512, maxdisp 192, the reference table: the shared extractor counted twice (it runs on both
    # views), transposed 3D convs per input voxel, cost volume / upsampling / soft-argmin not
    # counted. Shapes only: the count runs on the meta device (no arithmetic, ~2 s).
    task = _task()
    assert (task.input_size, task.maxdisp, task.width) == ((256, 512), 192, 1.0)
    assert count_params(task.build_model()) == 5_224_768
    model = task.build_model().to("meta")
    macs = count_macs(model, task.example_input().to("meta"))
    assert macs.total == 184_695_472_128  # ≈ 184.7 G
    extractor = sum(v for k, v in macs.per_module.items() if k.startswith("feature_extraction"))
    # one view's extractor by hand: firstconv + the four stages + SPP + lastconv at 128×256 / 64×128
    h2, h4 = 128 * 256, 64 * 128
    first = h2 * 9 * (3 * 32 + 32 * 32 + 32 * 32)
    layer1 = 3 * 2 * h2 * 9 * 32 * 32
    layer2 = h4 * (9 * 32 * 64 + 9 * 64 * 64 + 32 * 64) + 15 * 2 * h4 * 9 * 64 * 64
    layer3 = h4 * (9 * 64 * 128 + 9 * 128 * 128 + 64 * 128) + 2 * 2 * h4 * 9 * 128 * 128
    layer4 = 3 * 2 * h4 * 9 * 128 * 128
    spp = sum((64 // p) * (128 // p) * 128 * 32 for p in (64, 32, 16, 8))
    last = h4 * (9 * 320 * 128 + 128 * 32)
    assert extractor == 2 * (first + layer1 + layer2 + layer3 + layer4 + spp + last)
    # a transposed conv counts C_in·C_out·27 per *input* voxel: dres2.conv6 reads 1/8 resolution
    assert macs.per_module["dres2.conv6.0"] == (48 // 2) * (64 // 2) * (128 // 2) * 64 * 32 * 27


def test_tiers_shrink_the_model_and_say_so():
    cpu = _task(tier="cpu")
    assert (cpu.input_size, cpu.maxdisp, cpu.width, cpu.spp_pools) == (
        (64, 128),
        32,
        0.25,
        (16, 8, 4, 2),
    )
    assert count_macs(cpu.build_model(), cpu.example_input()).total == 311_694_336
    assert _task(tier="paper").maxdisp == 192


def test_bad_input_shapes_are_refused_clearly():
    model = PSMNet(16, 0.25, (8, 4, 2, 1)).eval()
    with pytest.raises(ConfigError, match=r"48×72: H and W must be multiples of 16"):
        model(torch.zeros(1, 6, 48, 72))
    with pytest.raises(ConfigError, match=r"≥ 32 \(4 × the largest SPP pool 8\)"):
        model(torch.zeros(1, 6, 16, 64))
    with pytest.raises(ConfigError, match="maxdisp=20"):
        PSMNet(20)
    with pytest.raises(ValueError, match=r"\(B, 6, H, W\)"):
        model(torch.zeros(1, 3, 32, 64))
    with pytest.raises(InstantiationException, match="250×512: H and W must be multiples"):
        _task(input_size=[250, 512])
    x, d = torch.zeros(6, 10, 20), torch.zeros(10, 20)
    with pytest.raises(ConfigError, match="crop 16×8 is larger than the 10×20 image"):
        window(x, d, "random", (16, 8))


def test_epe_d1_and_3px_on_hand_made_maps():
    gt = torch.tensor([[[10.0, 100.0, float("nan"), 2.0], [50.0, 200.0, 0.0, 4.0]]])
    pred = torch.tensor([[[11.0, 104.0, 7.0, 6.0], [54.0, 0.0, 0.5, 4.0]]])
    m = stereo_metrics(maxdisp=192)
    for metric in m.values():
        metric.update(pred, gt)
    # valid: finite and < 192 → 10, 100, 2, 50, 0, 4 (200 and NaN excluded); errors 1, 4, 4, 4, 0.5, 0
    assert float(m["epe"].compute()) == pytest.approx(13.5 / 6)
    # > 3 px: 100 (4), 2 (4), 50 (4); and > 5 % of gt: 4 > 5 (no), 4 > 0.1 (yes), 4 > 2.5 (yes)
    assert float(m["3px"].compute()) == pytest.approx(3 / 6)
    assert float(m["d1"].compute()) == pytest.approx(2 / 6)
    # pixel-weighted: a second update with one more valid pixel counts as one pixel, not a batch
    m["epe"].update(torch.tensor([[9.0]]), torch.tensor([[0.0]]))
    assert float(m["epe"].compute()) == pytest.approx((13.5 + 9) / 7)


def test_loss_weights_the_three_outputs():
    gt = torch.tensor([[[1.0, float("nan")]]])
    preds = tuple(torch.tensor([[[1.0 + k, 50.0]]]) for k in (1, 2, 3))  # errors 1, 2, 3
    # smooth L1 (β = 1): 0.5, 1.5, 2.5 → 0.5·0.5 + 0.7·1.5 + 1.0·2.5
    assert float(stereo_loss(preds, gt, 192)) == pytest.approx(0.25 + 1.05 + 2.5)
    assert float(stereo_loss(preds[2], gt, 192)) == pytest.approx(2.5)


def _write_pfm(path: Path, rows_top_first: np.ndarray, little: bool) -> None:
    h, w = rows_top_first.shape
    data = np.flipud(rows_top_first).astype("<f4" if little else ">f4")
    path.write_bytes(b"Pf\n%d %d\n%s\n" % (w, h, b"-1.0" if little else b"1.0") + data.tobytes())


@pytest.mark.parametrize("little", [True, False])
def test_pfm_reader_handles_endianness_and_row_order(tmp_path, little):
    img = np.arange(12, dtype=np.float32).reshape(3, 4) + 0.5
    _write_pfm(tmp_path / "d.pfm", img, little)
    out = read_pfm(tmp_path / "d.pfm")
    assert out.dtype == np.float32 and out[0, 0] == 0.5 and out[2, 3] == 11.5
    np.testing.assert_array_equal(out, img)
    (tmp_path / "bad.pfm").write_bytes(b"P6\n1 1\n1.0\n")
    with pytest.raises(ConfigError, match="not a PFM"):
        read_pfm(tmp_path / "bad.pfm")


def test_kitti_png_reader(tmp_path):
    raw = np.array([[0, 256, 512 + 64]], dtype=np.uint16)
    Image.fromarray(raw).save(tmp_path / "d.png")
    out = read_kitti_disparity(tmp_path / "d.png")
    assert math.isnan(out[0, 0]) and out[0, 1] == 1.0 and out[0, 2] == 2.25


def _kitti_tree(root: Path, n: int = 200) -> None:
    base = root / "training"
    rng = np.random.default_rng(0)
    for sub in ("image_2", "image_3", "disp_occ_0"):
        (base / sub).mkdir(parents=True)
    for i in rng.permutation(n):  # written in shuffled order: the listing must not depend on it
        name = f"{i:06d}_10.png"
        for sub in ("image_2", "image_3"):
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(base / sub / name)
        Image.fromarray(np.full((4, 4), 256 * (i + 1), np.uint16)).save(base / "disp_occ_0" / name)


def test_kitti_split_is_sorted_and_seeded(tmp_path):
    _kitti_tree(tmp_path)
    train, test = kitti2015_lists(tmp_path)
    assert (len(train), len(test)) == (160, 40)
    assert {p[0].name for p in train}.isdisjoint(p[0].name for p in test)
    # the seed-0 permutation of the sorted listing, whatever the file-system order
    order = np.random.default_rng(0).permutation(200)
    assert [p[0].name for p in test] == [f"{i:06d}_10.png" for i in order[160:]]
    assert kitti2015_lists(tmp_path) == (train, test)
    with pytest.raises(ConfigError, match="does not exist.*data=embedded"):
        kitti2015_lists(tmp_path / "nowhere")


def test_sceneflow_lists_follow_the_psmnet_layout(tmp_path):
    def pair(img_root: Path, disp_root: Path, rel: str) -> None:
        for side in ("left", "right"):
            (img_root / rel / side).mkdir(parents=True, exist_ok=True)
            (img_root / rel / side / "0006.png").write_bytes(b"")
        (disp_root / rel / "left").mkdir(parents=True, exist_ok=True)
        _write_pfm(disp_root / rel / "left" / "0006.pfm", np.ones((2, 2)), True)

    pair(tmp_path / "frames_cleanpass", tmp_path / "frames_disparity", "TRAIN/A/0000")
    pair(tmp_path / "frames_cleanpass", tmp_path / "frames_disparity", "TEST/B/0001")
    pair(tmp_path / "monkaa_frames_cleanpass", tmp_path / "monkaa_disparity", "treeflight")
    pair(tmp_path / "driving_frames_cleanpass", tmp_path / "driving_disparity", "15mm/fwd/fast")
    train, test = sceneflow_lists(tmp_path)
    assert len(train) == 3 and len(test) == 1
    assert test[0][1].parts[-4:] == ("B", "0001", "right", "0006.png")
    assert test[0][2].name == "0006.pfm"
    with pytest.raises(ConfigError, match="lacks.*task.folders"):
        sceneflow_lists(tmp_path, {"monkaa": "monkaa_renamed"})


def test_rendered_pair_is_geometrically_exact():
    rng = np.random.default_rng(3)
    left, right, disp = render_pair(rng, 48, 96, 32)
    assert left.shape == right.shape == (48, 96, 3) and disp.shape == (48, 96)
    ok = np.isfinite(disp)
    assert 0.5 < ok.mean() < 1 and np.nanmax(disp) < 32 and np.nanmin(disp) >= 0
    y, x = np.nonzero(ok)
    assert (x - disp[y, x] >= 0).all()  # invalid = the match leaves the right image
    # where the disparity is locally constant (no occlusion boundary), the left pixel is found
    # in the right view at x − d (up to the views' independent noise and sub-pixel sampling)
    xi = np.round(x - disp[y, x]).astype(int)
    flat = np.abs(disp[y, x] - np.round(disp[y, x])) < 0.05
    diff = np.abs(left[y, x].astype(float) - right[y, xi].astype(float))[flat].mean()
    assert diff < 12  # a wrong disparity gives ~ the texture contrast (tens of grey levels)


def test_motorcycle_is_scaled_to_fit_maxdisp():
    m = motorcycle(32)
    h, w = m["disp"].shape[1:]
    assert h % 16 == 0 and w % 16 == 0 and m["left"].shape == (1, h, w, 3)
    assert np.nanmax(m["disp"]) <= 31 and 0.05 < np.isnan(m["disp"]).mean() < 0.2
    assert float(m["scale"]) == pytest.approx(round(741 * 31 / 59.91) / 741, rel=1e-6)


# CaP evaluates the validation split once per trial (~90 ms here): one bisection step per layer
# and two outer searches keep it to ~80 passes without changing what is checked.
SMOKE_OVERRIDES = {"cap": ("method.ridge=1e-6", "method.search_steps=1", "method.target_iters=2")}


@pytest.fixture(scope="module")
def baseline_cache(tmp_path_factory) -> Path:
    """One baseline cache for every method below (the same config trains the same baseline)."""
    return tmp_path_factory.mktemp("stereo_cache")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_embedded_stereo(tmp_path, baseline_cache, method):
    cfg = make_cfg(
        tmp_path,
        "task=stereo",
        f"method={method}",
        "target.macs_reduction=0.4",
        f"paths.cache_dir={baseline_cache}",
        *SMOKE_OVERRIDES.get(method, ()),
    )
    rec = Pipeline(cfg).run()
    assert rec["status"] == "ok" and rec["task"] == "stereo_psmnet_sceneflow"
    assert rec["metric"] == "test/epe" and rec["higher_is_better"] is False
    keys = {f"test/{p}{k}" for p in ("", "motorcycle/") for k in ("epe", "d1", "3px")}
    assert set(rec["test"]) == keys
    assert all(math.isfinite(v) and v >= 0 for v in rec["test"].values())
    macs = rec["macs"]
    assert macs["dense"] == 67_427_328  # the smoke model: 32×64, maxdisp 16, width 0.25
    assert rec["achieved_macs_reduction"] == pytest.approx(1 - macs["compressed"] / macs["dense"])
    if method == "dense":
        assert macs["compressed"] == macs["dense"] and rec["test"] == rec["baseline"]["test"]
    elif rec["target_macs_reduction"] is not None and method != "lapp":
        assert abs(rec["achieved_macs_reduction"] - 0.4) <= 0.01
    else:  # TRP's own reduction; LAPP's thresholds (one 3D channel is ~3 % of this tiny model)
        assert 0 < rec["achieved_macs_reduction"] < 0.6
    # the compressed checkpoint rebuilds the slimmed model with the MACs the run realised
    loaded = load(checkpoint_file(rec))
    assert count_macs(loaded, torch.zeros(1, 6, 32, 64)).total == macs["realised"]


def test_masked_equals_slimmed_on_psmnet():
    task = _task(tier="smoke")
    torch.manual_seed(0)
    model = task.build_model().double().eval()
    for mod in model.modules():  # non-trivial BN statistics, so a wrong channel would show
        if isinstance(mod, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 6, 32, 64, dtype=torch.float64)
    prunable, protected = task.prunable_layers(model), task.protected_layers(model)
    ctx = CompressContext.build(model, x[:1], prunable, protected, 0.5, 0)
    assert len(ctx.structure.groups) == len(prunable) == 38
    plan = Magnitude("uniform").compress(ctx)
    slimmed = slim(model, plan, x[:1], ctx.structure).eval()
    reduction = 1 - count_macs(slimmed, x[:1]).total / count_macs(model, x[:1]).total
    assert (
        reduction == pytest.approx(ctx.mac_model.plan_reduction(plan))
        and abs(reduction - 0.5) < 0.01
    )
    masked = apply_masks(copy.deepcopy(model), plan, ctx.structure).eval()
    with torch.no_grad():
        torch.testing.assert_close(masked(x), slimmed(x), rtol=1e-9, atol=1e-9)
    for name in protected:  # the cost-volume layout and the classifiers' outputs are untouched
        torch.testing.assert_close(
            slimmed.get_submodule(name).weight.shape[0], model.get_submodule(name).weight.shape[0]
        )


def test_conv3d_and_dilated_convs_get_same_size_bypasses():
    x3, x2 = torch.randn(1, 4, 6, 8, 10), torch.randn(1, 4, 9, 9)
    conv3 = torch.nn.Conv3d(4, 5, 3, stride=2, padding=1, bias=False)
    dilated = torch.nn.Conv2d(4, 5, 3, padding=2, dilation=2, bias=False)
    for conv, x in ((conv3, x3), (dilated, x2)):
        for kind in ("conv1x1", "dwconv3x3"):
            b = Bypassed(conv, kind)
            assert b.kind == kind and b(x).shape == conv(x).shape
    assert isinstance(Bypassed(conv3, "conv1x1").bypass, torch.nn.Conv3d)
    with pytest.raises(ValueError, match=r"dilation·\(k-1\)/2 = \[2, 2\]"):
        make_bypass(torch.nn.Conv2d(4, 5, 3, padding=1, dilation=2), "conv1x1")


def test_conv3d_patch_vectors_reproduce_the_conv():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 7, 8)
    for conv in (
        torch.nn.Conv3d(3, 5, 3, stride=2, padding=1, bias=False),
        torch.nn.Conv3d(3, 5, (3, 1, 3), stride=(1, 2, 1), padding=(2, 0, 2), dilation=2),
    ):
        y = conv(x) - (0 if conv.bias is None else conv.bias.view(1, -1, 1, 1, 1))
        rows = patch_vectors(conv, x) @ conv.weight.reshape(5, -1).T  # (B·D'·H'·W', C_out)
        torch.testing.assert_close(rows.reshape(2, *y.shape[2:], 5).movedim(-1, 1), y)


def test_adam_recipe_builds_adam():
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = make_optimizer(
        [{"params": params}], OptimSpec(lr=1e-3, optimizer="adam", betas=(0.8, 0.9))
    )
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["betas"] == (0.8, 0.9)
    assert isinstance(make_optimizer([{"params": params}], OptimSpec(lr=0.1)), torch.optim.SGD)
    with pytest.raises(ConfigError, match="optimizer='rmsprop'; choices"):
        make_optimizer([{"params": params}], OptimSpec(lr=0.1, optimizer="rmsprop"))
    task = _task()
    assert task.recipe["baseline"].optimizer == "adam" and task.recipe["baseline"].milestones == ()


def test_sceneflow_disk_datamodule_crops_and_pads(tmp_path):
    rng = np.random.default_rng(0)
    for split, seq in (("TRAIN", "A/0000"), ("TRAIN", "B/0001"), ("TEST", "A/0002")):
        for side in ("left", "right"):
            folder = tmp_path / "frames_cleanpass" / split / seq / side
            folder.mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (40, 70, 3), dtype=np.uint8)).save(
                folder / "1.png"
            )
        disp = tmp_path / "frames_disparity" / split / seq / "left"
        disp.mkdir(parents=True)
        _write_pfm(disp / "1.pfm", np.full((40, 70), 7.0), little=True)
    for sub in ("monkaa_frames_cleanpass", "monkaa_disparity", "driving_frames_cleanpass"):
        (tmp_path / sub).mkdir()
    (tmp_path / "driving_disparity").mkdir()
    task = _task(tier="smoke")
    data = {"source": "disk", "root": str(tmp_path), "val_fraction": 0.5}
    dm = task.datamodule(data, {"train": None, "val": None, "test": None}, seed=0)
    x, d = dm.train_set[0]
    assert x.shape == (6, 32, 64) and d.shape == (32, 64) and float(d.mean()) == 7.0  # random crop
    x, d = dm.test_set[0]  # padded at the top and right to 48×80, padding without ground truth
    assert x.shape == (6, 48, 80) and torch.isnan(d[:8]).all() and torch.isnan(d[:, 70:]).all()
    assert float(d[8:, :70].mean()) == 7.0 and float(x[:, :8].abs().sum()) == 0.0
    assert (len(dm.train_set), len(dm.val_set)) == (1, 1)


class _Replay(torch.nn.Module):
    """Stands in for the feature extractor: checks it is called on each view in turn (left, then
    right, as the authors' ``stackhourglass.py`` does) and returns the given features."""

    def __init__(self, views, features) -> None:
        super().__init__()
        self.calls = list(zip(views, features, strict=True))

    def forward(self, x):
        view, features = self.calls.pop(0)
        assert torch.equal(x, view)
        return features


def _bn_buffers(model):
    return {k: v for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def test_training_forward_runs_the_extractor_per_view():
    # Reference: the authors' order — the extractor on the left view, then on the right (BN
    # statistics per view, running statistics updated twice), then the 3D part on those features.
    torch.manual_seed(0)
    ours = PSMNet(16, 0.25, (8, 4, 2, 1)).double().train()
    ref, stacked = copy.deepcopy(ours), copy.deepcopy(ours)
    x = torch.randn(2, 6, 32, 64, dtype=torch.float64)
    with torch.no_grad():
        preds = ours(x)
        views = [x[:, :3], x[:, 3:]]
        features = [ref.feature_extraction(v) for v in views]
        extractor, ref.feature_extraction = ref.feature_extraction, _Replay(views, features)
        ref_preds = ref(x)
        assert not ref.feature_extraction.calls  # both views were asked for
        ref.feature_extraction = extractor
    assert len(preds) == 3
    for p, q in zip(preds, ref_preds, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    mine, theirs = _bn_buffers(ours), _bn_buffers(ref)
    assert mine.keys() == theirs.keys()
    for k in mine:
        torch.testing.assert_close(mine[k], theirs[k], rtol=0, atol=0)
    assert int(mine["feature_extraction.firstconv.0.1.num_batches_tracked"]) == 2
    assert int(mine["dres0.0.1.num_batches_tracked"]) == 1
    # the stacked pass (the extractor once on both views) is what this guards against: its
    # pooled statistics give other features and running statistics
    with torch.no_grad():
        both = stacked.feature_extraction(torch.cat(views, 0))
    assert not torch.allclose(both[:2], features[0], atol=1e-6)
    assert not torch.allclose(
        stacked.feature_extraction.firstconv[0][1].running_mean,
        ours.feature_extraction.firstconv[0][1].running_mean,
        atol=1e-6,
    )
