"""The on-disk stereo datasets in their standard layouts.

* **SceneFlow**, PSMNet's folder convention (``dataloader/listflowfile.py``): one root holding
  FlyingThings3D ``frames_cleanpass/{TRAIN,TEST}/{A,B,C}/<seq>/{left,right}/*.png`` with
  ``frames_disparity/…/left/*.pfm``, Monkaa ``monkaa_frames_cleanpass/<scene>/{left,right}`` with
  ``monkaa_disparity``, Driving ``driving_frames_cleanpass/<focal>/<dir>/<speed>/{left,right}``
  with ``driving_disparity``. Train = FlyingThings3D TRAIN + Monkaa + Driving; test =
  FlyingThings3D TEST. The six folder names are ``task.folders`` (the official download names
  them differently). Every ``left/*.png`` under an image folder is a sample; its right view and
  ``.pfm`` disparity sit at the same relative path.
* **KITTI 2015** (``data.root`` = the ``data_scene_flow`` folder): ``training/image_2/*_10.png``
  (left), ``image_3`` (right), ``disp_occ_0`` (16-bit PNG ÷ 256, 0 = no GT). The listing is
  **sorted** (PSMNet uses ``os.listdir`` order) and split by a seeded permutation (seed 0) into
  160 train / 40 test (PSMNet's 160/40, reported as its validation).

Validation is a seeded hold-out (seed 0) of ``data.val_fraction`` of the training list.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prunebench.errors import ConfigError

SCENEFLOW_FOLDERS = {
    "things": "frames_cleanpass",
    "things_disparity": "frames_disparity",
    "monkaa": "monkaa_frames_cleanpass",
    "monkaa_disparity": "monkaa_disparity",
    "driving": "driving_frames_cleanpass",
    "driving_disparity": "driving_disparity",
}
KITTI_TRAIN = 160  # of 200 training pairs; the other 40 are the test split


def _root(root: str | Path | None, layout: str) -> Path:
    if not root:
        raise ConfigError(f"data=disk needs data.root=… ({layout}); or use data=embedded")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ConfigError(f"data.root={path} does not exist ({layout}); or use data=embedded")
    return path


def _pairs(images: Path, disparity: Path, ext: str) -> list[tuple[Path, Path, Path]]:
    out = []
    for left in sorted(images.rglob("left/*.png")):
        rel = left.relative_to(images)
        right = images / rel.parent.parent / "right" / rel.name
        disp = (disparity / rel).with_suffix(ext)
        for p in (right, disp):
            if not p.is_file():
                raise ConfigError(f"{left} has no {p} (SceneFlow layout: see tasks/stereo/disk.py)")
        out.append((left, right, disp))
    return out


def sceneflow_lists(root, folders: dict | None = None) -> tuple[list, list]:
    """(train, test) sample lists of SceneFlow under ``root``."""
    f = {**SCENEFLOW_FOLDERS, **(folders or {})}
    layout = "SceneFlow: " + ", ".join(f"{v}/" for v in f.values())
    base = _root(root, layout)
    missing = [v for v in f.values() if not (base / v).is_dir()]
    if missing:
        raise ConfigError(f"data.root={base} lacks {missing} ({layout}; task.folders renames them)")
    things, things_d = base / f["things"], base / f["things_disparity"]
    train = (
        _pairs(things / "TRAIN", things_d / "TRAIN", ".pfm")
        + _pairs(base / f["monkaa"], base / f["monkaa_disparity"], ".pfm")
        + _pairs(base / f["driving"], base / f["driving_disparity"], ".pfm")
    )
    test = _pairs(things / "TEST", things_d / "TEST", ".pfm")
    if not train or not test:
        raise ConfigError(f"data.root={base}: no left/*.png found for the train or test split")
    return train, test


def kitti2015_lists(root) -> tuple[list, list]:
    """(train, test) sample lists of KITTI 2015: sorted listing, seeded 160/40 split."""
    layout = "KITTI 2015: training/image_2, image_3, disp_occ_0"
    base = _root(root, layout) / "training"
    lefts = sorted((base / "image_2").glob("*_10.png"))
    if len(lefts) <= KITTI_TRAIN:
        raise ConfigError(f"{base / 'image_2'}: {len(lefts)} *_10.png files, need > 160 ({layout})")
    samples = []
    for left in lefts:
        right, disp = base / "image_3" / left.name, base / "disp_occ_0" / left.name
        for p in (right, disp):
            if not p.is_file():
                raise ConfigError(f"{left} has no {p} ({layout})")
        samples.append((left, right, disp))
    order = np.random.default_rng(0).permutation(len(samples))
    return [samples[i] for i in order[:KITTI_TRAIN]], [samples[i] for i in order[KITTI_TRAIN:]]


def hold_out(samples: list, fraction: float) -> tuple[list, list]:
    """(train, val): a seeded (seed 0) ``fraction`` of ``samples`` held out for validation."""
    order = np.random.default_rng(0).permutation(len(samples))
    n_val = max(1, round(fraction * len(samples)))
    return [samples[i] for i in order[n_val:]], [samples[i] for i in order[:n_val]]
