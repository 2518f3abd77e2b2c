import torch

from robot_rl.rl.sac import SAC, SACConfig
from robot_rl.threads import FEW_THREADS_LEARNER_WORK, few_threads, learner_threads


def _with_two_threads(fn):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def test_small_work_runs_on_one_thread_and_restores_the_setting() -> None:
    def run():
        inside = []
        with few_threads(32):
            inside.append(torch.get_num_threads())
        with few_threads(10_000):
            inside.append(torch.get_num_threads())
        with few_threads(32, threads=None):
            inside.append(torch.get_num_threads())
        return inside, torch.get_num_threads()

    inside, after = _with_two_threads(run)
    assert inside == [1, 2, 2] and after == 2


def test_learner_threads_by_size_and_device() -> None:
    def run():
        seen = []
        for batch, hidden, device in [
            (128, (128, 128), "cpu"),
            (FEW_THREADS_LEARNER_WORK // 64 + 1, (64,), "cpu"),
            (128, (128, 128), "cuda"),  # no CUDA needed: the device only picks the rule
        ]:
            with learner_threads(batch, hidden, device):
                seen.append(torch.get_num_threads())
        return seen

    assert _with_two_threads(run) == [1, 2, 2]


def test_a_small_sac_update_runs_on_one_thread() -> None:
    sac = SAC(6, 2, SACConfig(hidden_dims=(16, 16), batch_size=8))
    seen = []
    forward = sac.critic.forward

    def spy(*args):
        seen.append(torch.get_num_threads())
        return forward(*args)

    sac.critic.forward = spy
    batch = {
        "obs": torch.zeros(8, 6),
        "action": torch.zeros(8, 2),
        "reward": torch.zeros(8),
        "next_obs": torch.zeros(8, 6),
        "discount": torch.ones(8),
    }
    _with_two_threads(lambda: sac.update(batch))
    assert seen and set(seen) == {1}
