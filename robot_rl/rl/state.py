"""Training state without pickles: module weights, optimiser moments and small JSON metadata,
saved as one safetensors file plus one JSON file, written atomically (temp folder, rename)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def optimizer_tensors(
    prefix: str, opt: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten an optimiser's state into tensors (per-parameter moments) and JSON (groups)."""
    state = opt.state_dict()
    tensors = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            tensors[f"{prefix}/{idx}/{key}"] = torch.as_tensor(value).clone()
    return tensors, {"param_groups": state["param_groups"]}


def load_optimizer(
    prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "/"):
            _, idx, key = name.rsplit("/", 2)
            per_param.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})


def learner_tensors(
    modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> tuple[dict[str, torch.Tensor], dict]:
    """Named modules' weights (``name/param``) and optimisers' moments as tensors, plus the
    optimisers' JSON part (for ``meta["optimizers"]``); :func:`load_learner` undoes it."""
    tensors = {f"{n}/{k}": v for n, m in modules.items() for k, v in m.state_dict().items()}
    opt_meta = {}
    for name, opt in optimizers.items():
        opt_tensors, opt_meta[name] = optimizer_tensors(name, opt)
        tensors.update(opt_tensors)
    return tensors, opt_meta


def load_learner(
    tensors: dict[str, torch.Tensor],
    opt_meta: dict,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> None:
    """Loads what :func:`learner_tensors` saved into the same named modules and optimisers."""
    for name, mod in modules.items():
        prefix = name + "/"
        mod.load_state_dict(
            {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        )
    for name, opt in optimizers.items():
        load_optimizer(name, opt, tensors, opt_meta[name])


def save_training_state(folder: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``state.safetensors`` and ``state.json`` into ``folder`` atomically."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
        str(tmp / "state.safetensors"),
    )
    (tmp / "state.json").write_text(json.dumps(meta, indent=2))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def load_training_state(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    folder = Path(folder)
    files = [folder / "state.safetensors", folder / "state.json"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"training checkpoint {folder} is incomplete: missing {missing}")
    return load_file(str(files[0])), json.loads(files[1].read_text())
