"""VLM-RM (Rocamonde et al., 2023): a CLIP model's zero-shot reward, with open_clip.

With ``x`` the normalised image embedding, ``g`` and ``b`` the means of the normalised goal and
baseline prompt embeddings, ``d = g - b`` and ``P = alpha d d^T / |d|^2 + (1 - alpha) I``::

    R(x) = 1 - |(x - g) P|^2 / 2

``alpha = 0`` is plain similarity to the goal, ``alpha = 1`` the projection on the
baseline -> goal direction (only the component of the image that moves along it counts).

Weights: any open_clip model by name with a pretrained tag (from the local Hugging Face cache,
downloaded when the network allows) or a local weights file (``pretrained=/path/file``), an
open_clip folder (``local-dir:/path``, as written by :meth:`ClipReward.save` after domain
adaptation), ``hf-hub:org/repo``, or a random-weight model from an explicit ``model_cfg``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from robot_rl.core import keys
from robot_rl.core.policy import Observation
from robot_rl.core.reward import RewardModel
from robot_rl.rewards import checkpoint
from robot_rl.rewards.frames import check_images

CLIP_INSTALL = "pip install 'robot-rl[clip]' -c requirements/constraints.txt (open-clip-torch)"
LOCAL_DIR = "local-dir:"
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"


def import_open_clip():
    """``open_clip``, through the torchvision workaround of CPU-only machines when needed."""
    try:
        from robot_rl.lerobot_compat import import_torchvision

        import_torchvision()
        import open_clip
    except ImportError as err:
        raise ImportError(
            f"CLIP rewards need open_clip ({err}); install it: {CLIP_INSTALL}"
        ) from err
    return open_clip


@dataclass
class ClipConfig:
    """Which open_clip model, which prompts, which projection."""

    model: str = "ViT-B-32"
    """open_clip architecture name, ``local-dir:/path`` or ``hf-hub:org/repo``"""
    pretrained: str | None = None
    """for an architecture name: a pretrained tag (e.g. 'openai') or a local weights file"""
    model_cfg: dict[str, Any] | None = None
    """an explicit open_clip model config (embed_dim, vision_cfg, text_cfg): random weights"""
    image_key: str = "image.top"
    """camera the reward reads"""
    frame_size: int | None = None
    """pixels per side of the frames it is given (None: any); frames are resized to the
    model's input"""
    goal_prompts: list[str] = field(default_factory=lambda: ["the box is in a goal zone"])
    """prompts describing success; their mean embedding is g"""
    baseline_prompts: list[str] = field(default_factory=lambda: ["the box is not in a goal zone"])
    """prompts describing the scene without success; their mean embedding is b"""
    alpha: float = 1.0
    """projection strength: 0 plain similarity to g, 1 projection on g - b"""
    download: bool = False
    """fetch missing pretrained weights from the hub (off: only files and the local cache)"""
    batch_size: int = 64
    """frames per forward pass"""

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        for name in ("goal_prompts", "baseline_prompts"):
            prompts = list(getattr(self, name))
            if not prompts or any(not str(p).strip() for p in prompts):
                raise ValueError(
                    f"{name} must be a non-empty list of non-empty strings, got {prompts!r}; "
                    "e.g. goal_prompts=['the box is in a goal zone']"
                )
        if not keys.is_image_key(self.image_key):
            raise ValueError(f"image_key must look like 'image.<camera>', got {self.image_key!r}")


def missing_weights_message(model: str, pretrained: str, err: Exception) -> str:
    return (
        f"no weights for open_clip model {model!r} with pretrained={pretrained!r} ({err}). "
        "Nothing can be downloaded on this machine; provide the weights one of three ways: "
        f"(1) pretrained=/path/to/open_clip_pytorch_model.bin or .safetensors (the weights file "
        f"of {model!r}, e.g. from its Hugging Face repository); "
        "(2) model=local-dir:/path/to/folder holding open_clip_config.json and "
        "open_clip_model.safetensors; "
        f'(3) on a machine with internet run python -c "import open_clip; '
        f"open_clip.create_model('{model}', pretrained='{pretrained}')\" and copy "
        "~/.cache/huggingface to this machine (or point HF_HOME at the copy); "
        "with a network, download=true fetches them"
    )


def _cached_hub_file(repo_id: str, filenames: list[str]) -> str | None:
    """The local Hugging Face cache's copy of the first of ``filenames`` there, or None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return found
    return None


def _resolve_tag(open_clip, name: str, tag: str, download: bool) -> tuple[str, dict]:
    """A pretrained tag -> (the cached weights file, or the tag itself when downloading is
    allowed; the tag's preprocessing settings)."""
    tag_cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        repo_id, _, filename = (
            hub.rstrip("/").rpartition("/") if not hub.endswith("/") else (hub.rstrip("/"), "", "")
        )
        filename = filename or "open_clip_pytorch_model.bin"
        safe = [filename.rsplit(".", 1)[0] + ".safetensors", "open_clip_model.safetensors"]
        found = _cached_hub_file(repo_id, [*safe, filename])
        if found:
            return found, tag_cfg
    if download:
        return tag, tag_cfg
    raise FileNotFoundError(
        missing_weights_message(name, tag, FileNotFoundError("not in the local cache"))
    )


def load_open_clip(cfg: ClipConfig, folder: Path | None = None):
    """(model in eval mode, tokenizer callable ``list[str] -> LongTensor``, model config dict).
    ``folder`` resolves a checkpoint's relative ``local-dir:.``."""
    open_clip = import_open_clip()
    if cfg.model_cfg is not None:
        model_cfg = dict(cfg.model_cfg)
        model = open_clip.model.CLIP(**model_cfg)
        return model.eval(), _simple_tokenizer(open_clip, model), model_cfg
    name = cfg.model
    if name.startswith(LOCAL_DIR):
        path = Path(name[len(LOCAL_DIR) :])
        if folder is not None and not path.is_absolute():
            path = folder / path
        if not (path / OPEN_CLIP_CONFIG).is_file():
            raise FileNotFoundError(
                f"{path}: no {OPEN_CLIP_CONFIG} here; an open_clip folder holds "
                f"{OPEN_CLIP_CONFIG} and {OPEN_CLIP_WEIGHTS}"
            )
        name = LOCAL_DIR + str(path)
        model_cfg = json.loads((path / OPEN_CLIP_CONFIG).read_text())["model_cfg"]
    else:
        model_cfg = None
    pretrained, tag_cfg = cfg.pretrained, {}
    if pretrained and not name.startswith(("hf-hub:", LOCAL_DIR)):
        known = _known_tags(open_clip, name)
        if not Path(pretrained).is_file() and pretrained not in known:
            raise FileNotFoundError(
                f"pretrained={pretrained!r} is neither a file nor a known tag of {name!r} "
                f"(tags: {known}); pass the path of a weights file or one of the tags"
            )
        if pretrained in known:
            pretrained, tag_cfg = _resolve_tag(open_clip, name, pretrained, cfg.download)
    if name.startswith("hf-hub:") and not cfg.download:
        repo = name[len("hf-hub:") :]
        if _cached_hub_file(repo, [OPEN_CLIP_CONFIG]) is None:
            raise FileNotFoundError(
                missing_weights_message(name, "", FileNotFoundError("not in the local cache"))
            )
    try:
        model = open_clip.create_model(name, pretrained=pretrained, device="cpu")
    except (RuntimeError, AssertionError) as err:
        text = str(err)
        mismatch = ("size mismatch", "Missing key", "Unexpected key", "changed")
        if isinstance(err, AssertionError) or any(m in text for m in mismatch):
            first = text.splitlines()[1].strip() if len(text.splitlines()) > 1 else text[:200]
            raise ValueError(
                f"the checkpoint {pretrained or name!r} is not a {cfg.model!r} model "
                f"({first}); pass the architecture it was trained as (model=...)"
            ) from err
        if "Failed to download" in text or "not found in built-ins" not in text:
            raise FileNotFoundError(missing_weights_message(name, str(pretrained), err)) from err
        raise ValueError(f"unknown open_clip model {name!r}; see open_clip.list_models()") from err
    except OSError as err:  # hub: no network, no cache
        raise FileNotFoundError(missing_weights_message(name, str(pretrained), err)) from err
    if tag_cfg:  # a tag's own normalisation, lost when its cached file is passed instead
        pp = open_clip.get_model_preprocess_cfg(model)
        pp.update({k: tag_cfg[k] for k in ("mean", "std") if k in tag_cfg})
        open_clip.model.set_model_preprocess_cfg(model, pp)
    if model_cfg is None:
        model_cfg = open_clip.get_model_config(name.replace("/", "-")) or {}
    tokenizer = open_clip.get_tokenizer(name)
    return model.eval(), tokenizer, model_cfg


def _known_tags(open_clip, name: str) -> list[str]:
    try:
        return list(open_clip.list_pretrained_tags_by_model(name))
    except (KeyError, RuntimeError):
        return []


def _simple_tokenizer(open_clip, model):
    context = int(getattr(model, "context_length", 77))
    return lambda texts: open_clip.tokenize(list(texts), context_length=context)


class ClipReward(RewardModel):
    """VLM-RM on camera frames (see the module docstring). Shapes::

    obs[image_key] uint8 [B, S, S, 3] -> resize to the model's input, normalise
        -> x [B, E] (unit) -> R [B] float32
    """

    def __init__(
        self,
        cfg: ClipConfig,
        model=None,
        tokenizer=None,
        model_cfg=None,
        folder: Path | None = None,
    ):
        self.cfg = cfg
        if model is None:
            model, tokenizer, model_cfg = load_open_clip(cfg, folder)
        self.model, self.tokenizer, self.model_cfg = model.eval(), tokenizer, model_cfg
        self.required_keys = (cfg.image_key,)
        open_clip = import_open_clip()
        pp = open_clip.get_model_preprocess_cfg(model)
        size = pp.get("size", 224)
        self.input_size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        self.mean = torch.tensor(pp.get("mean", (0.48145466, 0.4578275, 0.40821073))).view(
            1, 3, 1, 1
        )
        self.std = torch.tensor(pp.get("std", (0.26862954, 0.26130258, 0.27577711))).view(
            1, 3, 1, 1
        )
        self.set_prompts(cfg.goal_prompts, cfg.baseline_prompts, cfg.alpha)

    @torch.no_grad()
    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        """Normalised text embeddings ``[P, E]``."""
        return F.normalize(self.model.encode_text(self.tokenizer(prompts)).float(), dim=-1)

    @torch.no_grad()
    def set_prompts(self, goal: list[str], baseline: list[str], alpha: float) -> None:
        """g, b, d and the projection P; errors on empty prompts or g == b."""
        ClipConfig(goal_prompts=list(goal), baseline_prompts=list(baseline), alpha=alpha)
        g = self.embed_text(list(goal)).mean(0)
        b = self.embed_text(list(baseline)).mean(0)
        d = g - b
        norm = float(d.norm())
        if norm < 1e-6:
            raise ValueError(
                f"goal prompts {list(goal)} and baseline prompts {list(baseline)} embed "
                f"identically (|g - b| = {norm:.2e}): the reward would be constant; use prompts "
                "that differ in what success looks like"
            )
        e = d / norm
        self.goal, self.baseline = g, b
        self.projection = alpha * torch.outer(e, e) + (1.0 - alpha) * torch.eye(len(d))
        self.cfg.goal_prompts, self.cfg.baseline_prompts = list(goal), list(baseline)
        self.cfg.alpha = alpha

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> normalised float [B, 3, h, w] at the model's input size."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(
                x, size=self.input_size, mode="bilinear", antialias=True, align_corners=False
            )
        return (x - self.mean) / self.std

    @torch.no_grad()
    def embed_images(self, images: np.ndarray) -> torch.Tensor:
        """Normalised image embeddings ``[B, E]``."""
        images = check_images(images, self.cfg.image_key, self.cfg.frame_size)
        out = [
            F.normalize(
                self.model.encode_image(
                    self.preprocess(images[i : i + self.cfg.batch_size])
                ).float(),
                dim=-1,
            )
            for i in range(0, len(images), self.cfg.batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, len(self.goal))

    def reward_from_embeddings(self, x: torch.Tensor) -> np.ndarray:
        y = (x - self.goal) @ self.projection
        return (1.0 - 0.5 * (y * y).sum(-1)).numpy().astype(np.float32)

    def __call__(self, obs: Observation) -> np.ndarray:
        self.check_obs(obs)
        return self.reward_from_embeddings(self.embed_images(obs[self.cfg.image_key]))

    def save(self, path: str | Path, with_weights: bool = True) -> Path:
        """A checkpoint folder; ``with_weights`` stores the open_clip weights in it (adapted
        models), else it records only where they come from (model name, pretrained)."""
        cfg = asdict(self.cfg)
        tensors = {}
        if with_weights:
            cfg.update(model=LOCAL_DIR + ".", pretrained=None, model_cfg=None)
            tensors = {k: v.contiguous() for k, v in self.model.state_dict().items()}
        pp = {
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            "size": list(self.input_size),
        }

        def write(tmp: Path) -> None:
            if with_weights:
                save_file(tensors, str(tmp / OPEN_CLIP_WEIGHTS))
                (tmp / OPEN_CLIP_CONFIG).write_text(
                    json.dumps({"model_cfg": self.model_cfg, "preprocess_cfg": pp}, indent=2)
                )

        return checkpoint.write_folder(path, {"kind": "vlm_rm", "config": cfg}, write)

    @classmethod
    def load(cls, path: str | Path, **overrides) -> ClipReward:
        """``overrides``: new prompts, alpha, frame_size, ... (not the weights)."""
        meta = checkpoint.read_meta(path)
        if meta["kind"] != "vlm_rm":
            raise ValueError(f"{path} holds a {meta['kind']!r}, not a vlm_rm")
        return cls(ClipConfig(**{**meta["config"], **overrides}), folder=Path(path))
