"""Thread and worker counts for a shared machine (solov2.engine.threads)."""

from __future__ import annotations

import pytest
import torch

from solov2.runtime.threads import busy_from_stat, choose_threads, choose_workers, configure_threads


def test_threads_leave_busy_cores_alone() -> None:
    # the measured case: 2 cores, two other jobs -> 1 thread (2 threads ran 5x slower)
    assert choose_threads(cores=2, busy=2.0, default=2) == 1
    assert choose_threads(cores=2, busy=1.0, default=2) == 1
    assert choose_threads(cores=2, busy=0.1, default=2) == 2  # a quiet machine: torch's default
    assert choose_threads(cores=64, busy=0.0, default=32) == 32  # never above the default
    assert choose_threads(cores=16, busy=0.0, default=8, procs=2) == 4  # torchrun: shared out
    assert choose_threads(cores=4, busy=9.0, default=4, procs=8) == 1  # at least one


def test_workers_sized_to_cores() -> None:
    assert choose_workers(2, cores=2) == 1  # one core stays with the main process
    assert choose_workers(2, cores=1) == 0
    assert choose_workers(4, cores=32, procs=8) == 3
    assert choose_workers(2, cores=32) == 2  # never above data.workers
    assert choose_workers(0, cores=32) == 0


def test_busy_cores_from_proc_stat() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    before = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n"
    after = "cpu  250 0 100 950 100 0 0 0 20 0\ncpu0 1 2 3 4\n"
    # 200 busy of 400 jiffies (guest counted inside user) on 2 CPUs: 1 core busy
    assert busy_from_stat(before, after, cpus=2) == 1.0


def test_omp_num_threads_is_respected() -> None:
    before = torch.get_num_threads()
    assert configure_threads({"OMP_NUM_THREADS": "1"}) is None
    assert torch.get_num_threads() == before


def test_commands_pick_threads_on_a_busy_machine(monkeypatch, capsys) -> None:  # noqa: ANN001
    """Without OMP_NUM_THREADS, a command on a machine whose 2 cores are busy runs 1 thread."""
    from solov2.cli import main
    from solov2.runtime import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda interval=0.2: 1.9)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert (
            main(
                [
                    "bench",
                    "--config",
                    "solov2_demo",
                    "--device",
                    "cpu",
                    "--size",
                    "64x96",
                    "--iters",
                    "1",
                    "--warmup",
                    "0",
                    "model.head.num_grids=[12,10,8,6,4]",
                ]
            )
            == 0
        )
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "CPU threads: 1 intra-op thread(s): 2 core(s), 1.9 busy" in capsys.readouterr().out


def test_predictor_picks_threads_on_a_cpu(monkeypatch) -> None:  # noqa: ANN001
    """``Predictor`` on a CPU chooses intra-op threads when built, as the commands do: the free
    cores (8 cores, 5 busy -> 3), never above torch's current count (a user's earlier
    ``torch.set_num_threads`` is a ceiling); ``OMP_NUM_THREADS`` or ``threads=None`` leave
    torch alone; ``threads=N`` sets N."""
    from solov2.infer import Predictor
    from solov2.model import build_model
    from solov2.presets import get_config
    from solov2.runtime import threads

    cfg = get_config("solov2_demo")
    model = build_model(cfg)
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.setattr(threads, "busy_cores", lambda interval=0.2: 5.0)
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(4)
        Predictor(model, cfg, device="cpu")
        assert torch.get_num_threads() == 4  # OMP_NUM_THREADS decides: torch's choice stands
        monkeypatch.delenv("OMP_NUM_THREADS")
        Predictor(model, cfg, device="cpu", threads=None)
        assert torch.get_num_threads() == 4
        Predictor(model, cfg, device="cpu")
        assert torch.get_num_threads() == 3  # 8 cores, 5 busy
        torch.set_num_threads(2)
        Predictor(model, cfg, device="cpu")
        assert torch.get_num_threads() == 2  # the user's 2 is a ceiling
        Predictor(model, cfg, device="cpu", threads=5)
        assert torch.get_num_threads() == 5
        for bad in (0, -1, 2.5, "many", True):
            with pytest.raises(ValueError, match="threads must be"):
                Predictor(model, cfg, device="cpu", threads=bad)
    finally:
        torch.set_num_threads(before)


def _stat(busy: int, idle: int) -> str:
    """A ``/proc/stat`` text with ``busy`` user and ``idle`` idle jiffies so far."""
    return f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4\n"


class FakeMachine:
    """A 4-CPU machine whose /proc/stat, our CPU time and clock the test moves forward."""

    def __init__(self) -> None:
        self.t, self.busy, self.idle, self.own = 0.0, 0, 0, 0.0

    def run(self, seconds: float, others: float, ours: float) -> None:
        """``seconds`` pass with ``others`` cores busy with other jobs and ``ours`` with us
        (100 jiffies a second per CPU)."""
        self.t += seconds
        self.busy += round(100 * seconds * (others + ours))
        self.idle += round(100 * seconds * (4 - others - ours))
        self.own += seconds * ours

    def probe(self):  # noqa: ANN201
        from solov2.runtime.threads import LoadProbe

        return LoadProbe(
            stat=lambda: _stat(self.busy, self.idle),
            own_cpu=lambda: self.own,
            clock=lambda: self.t,
            cpus=4,
        )


def test_training_threads_follow_the_load() -> None:
    """Other jobs start mid-run: threads drop to the free cores; they end: threads come back,
    never above the ceiling; nothing happens between checks (every ``period`` seconds)."""
    from solov2.runtime.threads import ThreadWatch

    m = FakeMachine()
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        watch = ThreadWatch(ceiling=4, cores=4, period=30.0, probe=m.probe())
        m.run(10, others=0.0, ours=4.0)
        assert watch.update() is None and torch.get_num_threads() == 4  # not yet 30 s
        m.run(20, others=0.0, ours=4.0)  # a quiet machine: we use it all, nothing changes
        assert watch.update() is None and torch.get_num_threads() == 4
        m.run(30, others=3.0, ours=1.0)  # three busy jobs start: 1 core left
        assert watch.update() == 1 and torch.get_num_threads() == 1
        m.run(30, others=2.0, ours=1.0)  # one ends: 2 free
        assert watch.update() == 2 and torch.get_num_threads() == 2
        m.run(30, others=0.0, ours=2.0)  # all ended: back to the ceiling
        assert watch.update() == 4 and torch.get_num_threads() == 4
        m.run(29, others=3.0, ours=1.0)
        assert watch.update() is None and torch.get_num_threads() == 4  # 29 s: not checked
        watch.probe.stat = lambda: "garbled"
        m.run(31, others=3.0, ours=1.0)
        assert watch.update() is None and watch.period == float("inf")  # unreadable: stops
    finally:
        torch.set_num_threads(before)


def test_training_thread_watch_only_where_it_decides() -> None:
    from solov2.runtime.threads import ThreadWatch, own_cpu_seconds

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert ThreadWatch.for_training(cpu, {"OMP_NUM_THREADS": "2"}) is None
    assert ThreadWatch.for_training(cuda, {}) is None
    assert ThreadWatch.for_training(cpu, {"LOCAL_WORLD_SIZE": "2"}) is None  # torchrun
    watch = ThreadWatch.for_training(cpu, {})
    assert watch is not None and watch.update() is None  # the first check is 30 s away
    t = own_cpu_seconds()
    sum(i * i for i in range(200_000))  # some CPU work of this process
    assert own_cpu_seconds() > t


def test_training_loop_consults_the_watch(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """CPU training asks its :class:`ThreadWatch` after every iteration."""
    from solov2.cli import main
    from solov2.data.synthetic import make_synthetic_coco
    from solov2.train import loop

    calls: list[str] = []

    class Watch:
        @classmethod
        def for_training(cls, device: torch.device):  # noqa: ANN206
            calls.append(device.type)
            return cls()

        def update(self) -> None:
            calls.append("update")

    monkeypatch.setattr(loop, "ThreadWatch", Watch)
    make_synthetic_coco(tmp_path / "d", num_images=(4, 1), image_size=(48, 64), seed=2)
    argv = ["train", "--config", "solov2_demo", "--data-root", str(tmp_path / "d")]
    tiny = ["model.head.num_grids=[12,10,8,6,4]", "data.train_scales=[[64,48]]"]
    out = ["--output-dir", str(tmp_path / "run"), "--device", "cpu", "--no-eval"]
    assert main([*argv, *out, "--max-iters", "3", *tiny]) == 0
    assert calls == ["cpu", "update", "update", "update"]
