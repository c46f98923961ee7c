"""The config group is the registry: file stem, module and class agree for every method and task,
and every one of them instantiates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hydra.utils import get_class, instantiate

from prunebench.method import Method
from prunebench.task import Task

CONF = Path(__file__).resolve().parents[1] / "conf"
METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))


@pytest.mark.parametrize("stem", METHODS)
def test_method_config_matches_module_and_class(stem):
    cfg = yaml.safe_load((CONF / "method" / f"{stem}.yaml").read_text())
    module, cls_name = cfg["_target_"].rsplit(".", 1)
    assert module == f"methods.{stem}"
    assert cls_name.lower() == stem.replace("_", "")
    assert cfg["name"] == stem
    method = instantiate({k: v for k, v in cfg.items() if k != "name"})
    assert isinstance(method, Method) and method.name == stem
    assert method.start in ("baseline", "scratch")
    # every hyper-parameter is declared with option() (type + interval or choices), so the one
    # check in Method.__post_init__ covers it
    fields = dataclasses.fields(method) if dataclasses.is_dataclass(method) else ()
    options = [f for f in fields if not f.name.startswith("_")]
    assert all("within" in f.metadata for f in options), [f.name for f in options]
    assert {f.name for f in options} == set(cfg) - {"_target_", "name"}


@pytest.mark.parametrize("stem", TASKS)
def test_task_config_builds(stem):
    cfg = yaml.safe_load((CONF / "task" / f"{stem}.yaml").read_text())
    if "defaults" in cfg:  # an alias (task=segmentation): only a defaults list naming one task
        assert set(cfg) == {"defaults"} and cfg["defaults"][-1] == "_self_"
        (target,) = cfg["defaults"][:-1]
        cfg = yaml.safe_load((CONF / "task" / f"{target}.yaml").read_text())
        stem = target
    # a task whose name carries its model (imagenet_timm: timm_<model>) interpolates it
    assert cfg["name"] == stem or "${" in cfg["name"]
    assert issubclass(get_class(cfg["_target_"]), Task)
    task = instantiate(cfg, _convert_="all")
    model = task.build_model()
    assert set(task.protected_layers(model)).isdisjoint(task.prunable_layers(model))
    assert {"baseline", "finetune"} <= set(task.recipe)
