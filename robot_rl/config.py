"""Typed job configs, composed by Hydra from ``configs/`` and validated against dataclasses.

Hydra composes the YAML groups (``task/``, ``policy/``, ...); the result is merged into the job's
dataclass schema, so a misspelt or ill-typed field fails before any work starts. Configs are not
mutated after parsing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf

from robot_rl.core.task import ExpertQuality, TaskConfig
from robot_rl.data.convert.options import CheckOptions, ConvertOptions

T = TypeVar("T")

CONFIG_DIR_ENV = "ROBOT_RL_CONFIG_DIR"


@dataclass
class TaskNode:
    """Schema of a ``configs/task/*.yaml`` entry (fields of :class:`TaskConfig`)."""

    name: str
    """short task name"""
    env_id: str
    """gymnasium id"""
    register_module: str = "sim"
    """module whose import registers env_id"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """keyword arguments for gymnasium.make"""
    expert: str | None = None
    """dotted path of the scripted expert class"""
    robot: str = "sim"
    """robot name recorded with episodes"""

    def build(self, **env_overrides: Any) -> TaskConfig:
        kwargs = {**self.env_kwargs, **env_overrides}
        return TaskConfig(
            self.name, self.env_id, self.register_module, kwargs, self.expert, self.robot
        )


@dataclass
class CollectJob:
    """``robot-rl collect``: scripted-expert episodes into an episode store."""

    task: TaskNode
    """the task to collect on"""
    store: str = "datasets/${task.name}_demos.zarr"
    """episode store path (created if missing, appended to otherwise)"""
    episodes: int = 100
    """number of episodes to collect"""
    noise_std: float = 0.0
    """expert action noise (quality knob)"""
    suboptimal_prob: float = 0.0
    """probability of a suboptimal expert episode (quality knob)"""
    cameras: list[str] = field(default_factory=list)
    """cameras to record as image.<name> (empty: state only)"""
    seed: int = 0
    """seed of the first episode; episode i uses seed + i"""
    overwrite: bool = False
    """replace an existing store instead of appending"""
    policy_path: str | None = None
    """checkpoint folder of a policy whose rollouts are appended after the expert episodes
    (mixed-quality data for offline RL: successes and failures, with rewards)"""
    policy_episodes: int = 0
    """number of policy rollouts to append (needs policy_path)"""
    policy_n_envs: int = 16
    """environments stepped in lock-step for the policy rollouts (batched inference)"""
    policy_seed: int = 100_000
    """seed of the first policy rollout (kept apart from the expert episodes' seeds)"""

    def __post_init__(self) -> None:
        if self.episodes < 0 or self.policy_episodes < 0:
            raise ValueError(
                f"collect.episodes and policy_episodes must be >= 0, got {self.episodes}, "
                f"{self.policy_episodes}"
            )
        if self.episodes + self.policy_episodes < 1:
            raise ValueError(
                f"collect.episodes must be >= 1, got {self.episodes} (or add "
                "policy_episodes=N policy_path=<checkpoint> for policy rollouts)"
            )
        if self.policy_episodes and not self.policy_path:
            raise ValueError(
                f"collect.policy_episodes={self.policy_episodes} needs policy_path=<checkpoint "
                "folder> of the policy to roll out"
            )
        ExpertQuality(self.noise_std, self.suboptimal_prob)  # validates the knob


@dataclass
class PretrainJob:
    """``robot-rl pretrain``: behaviour cloning from a store into a checkpoint folder."""

    task: TaskNode
    """the task the store was recorded on"""
    policy: dict[str, Any]
    """policy group entry: ``kind`` plus the policy's config fields"""
    store: str = "datasets/${task.name}_demos.zarr"
    """episode store to learn from"""
    out: str = "runs/${task.name}_${policy.kind}"
    """checkpoint folder to write"""
    steps: int = 3000
    """gradient steps"""
    batch_size: int = 256
    """windows per step"""
    lr: float = 1e-3
    """peak learning rate (cosine schedule with warm-up)"""
    weight_decay: float = 1e-6
    """AdamW weight decay"""
    seed: int = 0
    """seed of the sampler and the initial weights"""
    progress: bool = True
    """show a progress bar"""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}"
            )


@dataclass
class EvalJob:
    """``robot-rl eval``: success rate with a 95% Wilson interval, return and length."""

    task: TaskNode
    """the task to evaluate on"""
    policy_path: str = "runs/${task.name}_diffusion"
    """checkpoint folder of the policy"""
    episodes: int = 100
    """number of episodes"""
    n_envs: int = 16
    """vectorised environments"""
    seed: int = 10_000
    """seed of the evaluation episodes (kept apart from the collection seeds)"""
    out: str = "reports/eval"
    """folder for eval.json, the PNG and the video"""
    video_episodes: int = 2
    """episodes to record as mp4 (0: none)"""
    progress: bool = True
    """show a progress bar"""

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.n_envs < 1:
            raise ValueError(
                f"episodes and n_envs must be >= 1, got {self.episodes}, {self.n_envs}"
            )


@dataclass
class DemoJob:
    """``make demo``: collect imperfect demos, pretrain the diffusion policy, evaluate, report."""

    task: TaskNode
    """the default task"""
    policy: dict[str, Any]
    """the policy to pretrain"""
    collect: dict[str, Any] = field(default_factory=dict)
    """overrides of CollectJob fields (episodes, noise_std, suboptimal_prob, seed)"""
    pretrain: dict[str, Any] = field(default_factory=dict)
    """overrides of PretrainJob fields (steps, batch_size, lr, seed)"""
    eval: dict[str, Any] = field(default_factory=dict)
    """overrides of EvalJob fields (episodes, n_envs, seed, video_episodes)"""
    improver: dict[str, Any] | None = None
    """improver stage after pretraining (e.g. DSRL settings); None skips it"""
    out: str = "reports/demo"
    """report folder"""


def config_dir() -> Path:
    """Where the Hydra config groups live: ``$ROBOT_RL_CONFIG_DIR``, else ``configs/`` in the
    current directory or the project checkout this package was installed from."""
    candidates = []
    if os.environ.get(CONFIG_DIR_ENV):
        candidates.append(Path(os.environ[CONFIG_DIR_ENV]))
    candidates += [Path.cwd() / "configs", Path(__file__).resolve().parent.parent / "configs"]
    for path in candidates:
        if (path / "task").is_dir():
            return path.resolve()
    raise FileNotFoundError(
        f"no configs/ folder found (looked in {[str(p) for p in candidates]}); run from the "
        f"project root or set {CONFIG_DIR_ENV}"
    )


def compose(job: str, overrides: list[str] | tuple[str, ...] = (), config_path: Path | None = None):
    """Compose ``configs/<job>.yaml`` with Hydra overrides; returns the resolved DictConfig."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    path = config_path or config_dir()
    _register_schemas()
    if not (path / f"{job}.yaml").is_file():
        known = sorted(p.stem for p in path.glob("*.yaml"))
        raise ValueError(f"unknown job {job!r}: no {path / (job + '.yaml')}; jobs: {known}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(path), version_base="1.3"):
        cfg = hydra_compose(config_name=job, overrides=list(overrides))
    return cfg


def _register_schemas() -> None:
    """Each job's YAML starts from its dataclass (``- <job>_schema`` in its defaults list), so
    Hydra validates every override against the typed schema."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for job, schema in {**JOB_SCHEMAS, **DATASET_JOB_SCHEMAS}.items():
        store.store(name=f"{job}_schema", node=schema)


def to_schema(cfg: Any, schema: type[T]) -> T:
    """Validate a composed config against a job dataclass and return the typed object.
    Unknown keys and wrong types raise with the offending field named."""
    merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
    OmegaConf.resolve(merged)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def load_job(job: str, schema: type[T], overrides: list[str] | tuple[str, ...] = ()) -> T:
    return to_schema(compose(job, overrides), schema)


@dataclass
class ImproveJob:
    """``robot-rl improve``: improve a pretrained policy (``improver=dsrl``, ...)."""

    task: TaskNode
    """the task to improve on"""
    improver: dict[str, Any]
    """improver group entry: ``kind`` plus the improver's config fields"""
    base: str = "runs/${task.name}_diffusion"
    """checkpoint folder of the pretrained policy"""
    out: str = "runs/${task.name}_${improver.kind}"
    """run folder: checkpoint, TensorBoard, curve, the improved policy"""
    resume: bool = True
    """continue from ``out/checkpoint`` when it exists"""
    final_eval_episodes: int = 100
    """episodes of the final evaluation"""
    video_episodes: int = 2
    """episodes of the improved policy recorded to ``out/rollout.mp4`` (0: none)"""
    progress: bool = True
    """show a progress bar"""
    env: dict[str, Any] | None = None
    """training environment (``_target_`` + arguments, e.g. ``env=imagination``); None trains
    on the task itself. Evaluations always run on the task"""
    world_model: dict[str, Any] | None = None
    """world model group entry (``world_model=state``: ``path`` of its checkpoint), read by
    ``env=imagination``"""
    runner: dict[str, Any] | None = None
    """where experience is collected: None in this process; ``runner=ray``: Ray rollout workers
    and a Ray learner (:class:`robot_rl.distributed.RayRunnerConfig`)"""


@dataclass
class ServeJob:
    """``robot-rl serve robot=... policy=...``: the deployment daemon on a robot."""

    robot: dict[str, Any]
    """robot group entry: ``name``, ``task``, ``driver`` (``_target_`` + arguments), ``safety``"""
    policy_path: str | None = None
    """checkpoint folder to load at start (``policy=...`` on the command line); base, steered
    or offline-improved, anything ``load_policy`` reads"""
    store: str = "datasets/${robot.name}_robot.zarr"
    """episode store every episode is appended to (created if missing)"""
    host: str = "127.0.0.1"
    """control API address; anything but loopback needs a token"""
    port: int = 8765
    """control API port (0: any free port, printed at start)"""
    token: str | None = None
    """API token (else the ROBOT_RL_TOKEN environment variable)"""
    rate_hz: float = 30.0
    """control rate, 10-50 Hz"""
    max_episode_steps: int = 300
    """control steps before an episode is truncated"""
    prefetch: int = 2
    """request the next chunk when this many actions are left (-1: when used up)"""
    episodes: int = 0
    """run this many episodes back to back, then exit (0: serve until stopped)"""
    seed: int = 0
    """seed of the first episode and of the latent noise"""
    runner: str = "real.serve.serve"
    """dotted path of the daemon's entry point (the core does not import real/)"""

    def __post_init__(self) -> None:
        if not 10.0 <= self.rate_hz <= 50.0:
            raise ValueError(f"serve.rate_hz must be in [10, 50] Hz, got {self.rate_hz}")
        for key in ("name", "driver", "safety"):
            if key not in self.robot:
                raise ValueError(f"robot config lacks {key!r}; see configs/robot/*.yaml")


@dataclass
class ConvertJob(ConvertOptions):
    """``robot-rl convert SRC DST``: between LeRobot, robomimic HDF5, diffusion_policy zarr and
    the episode store (fields of :class:`ConvertOptions`, e.g. ``keys.state=[...]``)."""

    src: str = ""
    """dataset to read (the first positional argument)"""
    dst: str = ""
    """dataset to write (the second positional argument)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.src or not self.dst:
            raise ValueError("convert needs a source and a destination: robot-rl convert SRC DST")


@dataclass
class DatasetJob(CheckOptions):
    """``robot-rl dataset check PATH``: validate a dataset, write a summary and a PNG."""

    command: str = ""
    """what to do (the first positional argument): check"""
    path: str = ""
    """the dataset (the second positional argument)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.command != "check" or not self.path:
            raise ValueError(
                f"dataset {self.command or '(no command)'}: use robot-rl dataset check PATH"
            )


JOB_SCHEMAS: dict[str, type] = {
    "collect": CollectJob,
    "pretrain": PretrainJob,
    "eval": EvalJob,
    "improve": ImproveJob,
    "demo": DemoJob,
    "serve": ServeJob,
}

DATASET_JOB_SCHEMAS: dict[str, type] = {"convert": ConvertJob, "dataset": DatasetJob}
"""Jobs on dataset paths rather than a task; cli.py maps their positional arguments."""
