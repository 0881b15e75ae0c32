"""Fault injection on training (CPU): kills during checkpoint writes, SIGTERM/SIGINT, exact resume
after SIGKILL, non-finite losses and the fp16 GradScaler. See docs/RELIABILITY.md."""

from __future__ import annotations

import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import solov2.train.step as train_mod
from solov2.checkpoint import find_resume, load_checkpoint, save_checkpoint, write_last_checkpoint
from solov2.cli import main
from solov2.data.synthetic import make_synthetic_coco

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PY = sys.executable
TINY = [
    "model.head.num_grids=[12,10,8,6,4]",
    "model.fpn_channels=32",
    "model.head.in_channels=32",
    "model.head.seg_feat_channels=32",
    "model.head.kernel_channels=32",
    "model.head.stacked_convs=1",
    "model.mask_feat.mid_channels=32",
    "data.test_scale=[96,64]",
    "solver.log_period=1",
    # two scales and flips: augmentation randomness that a resume must reproduce
    "data.train_scales=[[96,64],[80,48]]",
    "solver.checkpoint_period=2",
    "solver.warmup_iters=2",
    "solver.base_lr=0.05",
]
N_ITERS = 6  # 6 training images, batch 2: 3 iterations per epoch, checkpoints at 2 and 4


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults_train") / "data"
    make_synthetic_coco(root, num_images=(6, 1), image_size=(64, 96), seed=1)
    return root


def train_argv(data_root: Path, out: Path, *extra: str, iters: int = N_ITERS) -> list[str]:
    return [
        "train",
        "--config",
        "solov2_demo",
        "--data-root",
        str(data_root),
        "--output-dir",
        str(out),
        "--max-iters",
        str(iters),
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-eval",
        "--seed",
        "3",
        *TINY,
        *extra,
    ]


class Run:
    """``python -m solov2 train ...`` in the background, stdout+stderr to ``out/console.txt``."""

    def __init__(self, argv: list[str], out: Path, env: dict[str, str] | None = None) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.console = out / f"console{len(list(out.glob('console*.txt')))}.txt"
        self._f = open(self.console, "w")
        full_env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            PYTHONWARNINGS="ignore::DeprecationWarning",
            **(env or {}),
        )
        # its own process group, like a job under a terminal or a scheduler
        self.proc = subprocess.Popen(
            [PY, "-m", "solov2", *argv],
            stdout=self._f,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )

    def signal_group(self, sig: int) -> None:
        """Signal the whole process group (main process and DataLoader workers), as Ctrl-C
        in a terminal or a scheduler's SIGTERM does."""
        os.killpg(self.proc.pid, sig)

    def text(self) -> str:
        return self.console.read_text()

    def wait_for_iteration(self, at_least: int, timeout: float = 240.0) -> int:
        """Block until the log shows ``iter: k/`` with ``k >= at_least``; return ``k``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            done = [int(k) for k in re.findall(r"iter: (\d+)/", self.text())]
            if done and max(done) >= at_least:
                return max(done)
            assert self.proc.poll() is None, f"exited early:\n{self.text()[-3000:]}"
            time.sleep(0.02)
        os.killpg(self.proc.pid, signal.SIGKILL)
        raise AssertionError(f"no iteration {at_least} within {timeout} s:\n{self.text()}")

    def wait(self, timeout: float = 300.0) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        finally:
            self._f.close()
        return rc


@pytest.fixture(scope="module")
def run_a(data_root: Path) -> Run:
    """The uninterrupted reference run, started at once so it overlaps the other runs."""
    out = data_root.parent / "A"
    return Run(train_argv(data_root, out), out)


def final_weights(run: Run) -> dict[str, torch.Tensor]:
    rc = run.wait()
    assert rc == 0, run.text()[-3000:]
    return load_checkpoint(run.out / "model_final.pth")["model"]


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:5]}"


# ---------------------------------------------------------------------------------------------
# SIGKILL while writing checkpoints


def _writer_child(d: Path, run: int, wfd: int, blob: torch.Tensor) -> None:
    """Write ever newer versions of a big state until killed; report 'start v' / 'done v'.

    Runs in a forked copy of the test process: no intra-op parallelism here (OpenMP's pool is
    not fork-safe), and ``blob`` was allocated before the fork."""
    try:
        torch.set_num_threads(1)
        for k in range(1, 10_000):
            v = run * 1000 + k
            blob[0] = blob[-1] = v
            os.write(wfd, f"start {v}\n".encode())
            state = {"version": v, "blob": blob, "meta": {"v": v, "name": f"v{v}"}}
            save_checkpoint(d / "target.pth", state)
            name = f"model_{v:07d}.pth"
            save_checkpoint(d / name, state)
            write_last_checkpoint(d, name)
            os.write(wfd, f"done {v}\n".encode())
    finally:
        os._exit(1)


def _lines(fd: int, pid: int, timeout: float = 60.0):
    """Lines from the child's pipe; kills the child and fails if it stays silent too long."""
    buf = b""
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"checkpoint writer silent for {timeout} s")
        chunk = os.read(fd, 4096)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode()


def _check_complete(path: Path) -> int:
    ckpt = load_checkpoint(path)
    v = ckpt["version"]
    expect = torch.zeros(8 * 2**20)
    expect[0] = expect[-1] = v
    assert torch.equal(ckpt["blob"], expect) and ckpt["meta"] == {"v": v, "name": f"v{v}"}
    return v


def test_sigkill_during_checkpoint_writes_keeps_last_complete_version(tmp_path: Path) -> None:
    rng = random.Random(0)
    kills, mid_write = 6, 0
    done_before: int | None = None
    blob = torch.zeros(8 * 2**20)  # 32 MiB
    for run in range(1, kills + 1):
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: no pytest code may run here
            os.close(rfd)
            _writer_child(tmp_path, run, wfd, blob)
        os.close(wfd)
        t_start: dict[int, float] = {}
        durations: list[float] = []
        started = done = None
        lines = _lines(rfd, pid)
        for line in lines:  # measure a few writes, then kill at a random moment of one
            kind, v = line.split()
            if kind == "start":
                started = int(v)
                t_start[started] = time.monotonic()
            else:
                done = int(v)
                durations.append(time.monotonic() - t_start[done])
                if len(durations) >= 2:
                    time.sleep(rng.uniform(0.0, 1.2 * max(durations)))
                    os.kill(pid, signal.SIGKILL)
                    break
        os.waitpid(pid, 0)
        for line in lines:  # what the child managed to report before dying
            kind, v = line.split()
            started, done = (int(v), done) if kind == "start" else (started, int(v))
        os.close(rfd)
        leftovers = list(tmp_path.glob(".*.tmp"))
        mid_write += bool(leftovers)

        # the fixed-name target is whole: the last finished version or the one in flight
        v = _check_complete(tmp_path / "target.pth")
        assert v in (done, started), (v, done, started)
        # last_checkpoint names a complete file, never a temporary one
        resumed = find_resume(tmp_path)
        assert resumed is not None and not resumed.name.endswith(".tmp")
        v_last = _check_complete(resumed)
        assert resumed.name == f"model_{v_last:07d}.pth"
        assert v_last in (done, started) and (done_before is None or v_last > done_before)
        # without last_checkpoint, the newest model_N.pth is taken: also complete
        (tmp_path / "last_checkpoint").unlink()
        newest = find_resume(tmp_path)
        assert newest is not None and _check_complete(newest) >= v_last
        write_last_checkpoint(tmp_path, resumed.name)
        for f in leftovers:
            f.unlink()
        done_before = done
    print(f"{kills} SIGKILLs, {mid_write} of them during a write (temporary file left)")
    # the random kills must have hit writes in progress (temporary files left behind)
    assert mid_write >= 1, "no kill landed during a write: the test proved nothing"


# ---------------------------------------------------------------------------------------------
# exact resume after SIGKILL; SIGTERM / SIGINT save and exit cleanly


def test_sigkill_then_resume_is_bitwise_exact(data_root: Path, run_a: Run) -> None:
    out = data_root.parent / "B"
    # the training loop's testing hook SIGKILLs the process at the start of iteration 5,
    # right after the periodic checkpoint of iteration 4 (mid-epoch: 3 iterations per epoch)
    b1 = Run(train_argv(data_root, out), out, env={"SOLOV2_FAULT_RANK_ITER": "0:5:kill"})
    assert b1.wait() == -signal.SIGKILL, b1.text()[-3000:]
    assert (out / "last_checkpoint").read_text().strip() == "model_0000004.pth"
    assert not (out / "model_final.pth").exists()
    b2 = Run(train_argv(data_root, out, "--resume"), out)
    b = final_weights(b2)
    assert "resumed from" in b2.text() and "at iteration 4" in b2.text()
    assert_bitwise_equal(final_weights(run_a), b)


def test_sigterm_sigint_save_exit_cleanly_and_resume_exactly(data_root: Path, run_a: Run) -> None:
    """SIGTERM, then SIGINT, to the whole process group, DataLoader workers included; each
    run saves a checkpoint at the iteration it was at and exits with 0; the third run finishes.
    Runs with 2, 1 and 0 workers: the per-item seeding makes the data independent of them."""
    out = data_root.parent / "C"
    c1 = Run(train_argv(data_root, out, "--workers", "2"), out)
    c1.wait_for_iteration(2)
    c1.signal_group(signal.SIGTERM)
    assert c1.wait() == 0, c1.text()[-3000:]
    m = re.search(r"received signal 15: saving a checkpoint at iteration (\d+)", c1.text())
    assert m, c1.text()[-3000:]
    k1 = int(m.group(1))
    assert 2 <= k1 < N_ITERS
    assert "Traceback" not in c1.text()
    ckpt = load_checkpoint(out / f"model_{k1:07d}.pth")
    assert ckpt["iteration"] == k1 and ckpt["model"] and ckpt["optimizer"]["state"]
    assert (out / "last_checkpoint").read_text().strip() == f"model_{k1:07d}.pth"
    assert not (out / "model_final.pth").exists()

    c2 = Run(train_argv(data_root, out, "--workers", "1", "--resume"), out)
    c2.wait_for_iteration(k1 + 1)
    c2.signal_group(signal.SIGINT)
    assert c2.wait() == 0, c2.text()[-3000:]
    m = re.search(r"received signal 2: saving a checkpoint at iteration (\d+)", c2.text())
    assert m, c2.text()[-3000:]
    k2 = int(m.group(1))
    assert k1 < k2 <= N_ITERS
    assert "Traceback" not in c2.text()
    assert load_checkpoint(out / f"model_{k2:07d}.pth")["iteration"] == k2

    c3 = Run(train_argv(data_root, out, "--resume"), out)
    # two stops at whatever iterations the signals landed on, and still the same weights
    assert_bitwise_equal(final_weights(run_a), final_weights(c3))


# ---------------------------------------------------------------------------------------------
# numerics


def test_nonfinite_loss_skips_step_then_stops(
    data_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    real = train_mod.solov2_losses
    bad = {2: float("nan"), 4: float("inf"), 5: float("nan"), 6: float("nan")}
    calls = {"n": 0}

    def losses(*args, **kwargs):  # noqa: ANN002, ANN003
        calls["n"] += 1
        out = real(*args, **kwargs)
        if calls["n"] in bad:
            out = {k: v * bad[calls["n"]] for k, v in out.items()}
        return out

    monkeypatch.setattr(train_mod, "solov2_losses", losses)
    out = tmp_path / "nan"
    rc = main(
        train_argv(
            data_root,
            out,
            "solver.max_nonfinite=3",
            "solver.checkpoint_period=1",
            "solver.keep_checkpoints=0",
            iters=10,
        )
    )
    stdout, err = capfd.readouterr()
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(
        "solov2 train: error: stopping at iteration 6: 3 consecutive "
        "non-finite losses (last: {'loss_cate': nan, 'loss_mask': nan})"
    )
    log = (out / "log.txt").read_text()
    for it in (2, 4, 5):
        assert re.search(
            rf"iteration {it}: non-finite loss \{{'loss_cate': (nan|inf), "
            rf"'loss_mask': (nan|inf)\}}, step skipped",
            log,
        ), it
    assert "iteration 3: non-finite" not in log  # a finite loss resets the count
    assert not (out / "model_final.pth").exists()
    # a skipped step leaves the parameters alone (BatchNorm statistics still move)
    p = {i: load_checkpoint(out / f"model_{i:07d}.pth")["model"] for i in (1, 2, 3)}
    params = [k for k, v in p[1].items() if v.is_floating_point() and "running_" not in k]
    assert all(torch.equal(p[1][k], p[2][k]) for k in params)
    assert not all(torch.equal(p[2][k], p[3][k]) for k in params)


def test_grad_scaler_skips_overflowing_step_and_halves_scale() -> None:
    """The fp16 path of the training step (scale, backward, unscale_, clip, step, update) on
    CPU: an overflowing step leaves the weights alone and halves the scale."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)

    def step(x: torch.Tensor) -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(x).float().pow(2).sum()
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())

    w0 = [p.detach().clone() for p in model.parameters()]
    # a finite loss whose scaled fp16 gradients overflow (2 * out * 2**16 > 65504)
    assert torch.isfinite(torch.tensor(step(torch.full((2, 4), 1e3))))
    assert all(torch.equal(a, p) for a, p in zip(w0, model.parameters()))
    assert scaler.get_scale() == 2.0**15
    assert not opt.state  # no momentum buffer was created by the skipped step
    step(torch.full((2, 4), 1e-2))  # a finite step updates the weights, keeps the scale
    assert not all(torch.equal(a, p) for a, p in zip(w0, model.parameters()))
    assert scaler.get_scale() == 2.0**15
    st = scaler.state_dict()  # what the checkpoint stores: plain numbers
    assert all(isinstance(v, (int, float)) for v in st.values())
