"""Stereo data: the disk readers (PFM, KITTI PNG) and split lists on files written here, the
embedded renderer's geometry, and the SceneFlow data module's crops and padding."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prunebench.errors import ConfigError
from tasks.stereo.disk import kitti2015_lists, sceneflow_lists
from tasks.stereo.embedded import motorcycle, render_pair
from tasks.stereo.io import read_kitti_disparity, read_pfm
from tests.test_stereo import _task


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
