"""`encode-videos --engine ray`: the local engine's index and failures from a Ray run, the same index
after the driver is SIGKILLed at random moments and run again, a model actor or decode task killed
mid-run, no Ray process left behind; the shard plan and the actor layout without Ray.

Ray instances are small (2 logical CPUs) and few: one private instance per CLI run that must own
its instance (the kill test), and one shared by the rest of the module, started in this process.
Slow (about 3 minutes more): a model actor and a decode task killed mid-run, new and changed
files after an interrupted run, a two-node cluster on loopback losing its worker node.
Leftovers are found by what only this module's instances carry (their session, or the
``MUSE_RAY_INSTANCE`` tag the engine gives its processes), never by name, so other Ray users of
the machine do not matter. The two-node cluster test is marked slow.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from muse_infer.data.writer import write_video

sys.path.insert(0, str(Path(__file__).parent))
from conftest import hang_env  # noqa: E402
from video_factory import make_video  # noqa: E402

FRAMES, BATCH, SHARD, TIMEOUT = 4, 2, 3, 4.0
HANG = "hang.mp4"
HANG_ENV = hang_env(f"{HANG}=120")  # this file's decode "hangs" (tests/hooks/sitecustomize.py)
CLI = [sys.executable, "-c", "from muse_infer.cli import main; main()"]
OPTIONS = ["--model", "tiny", "--device", "cpu", "--frames", FRAMES, "--batch-size", BATCH]
OPTIONS += ["--chunk-size", SHARD, "--timeout", TIMEOUT, "-q", "--engine", "ray"]
BAD = {
    "empty.mp4": "empty file",
    "text.mp4": "not a readable video container",
    "truncated.mkv": "truncated",
    "broken_link.mp4": "file not found",
    "fifo.mp4": "not a regular file",
    HANG: f"timed out after {TIMEOUT:g} s",
}


def noise_video(path: Path, seed: int, frames: int, fps: float, size=(48, 64), codec=None) -> None:
    rng = np.random.default_rng(seed)
    write_video(path, rng.integers(0, 256, (frames, *size, 3), dtype=np.uint8), fps=fps, codec=codec)


def build_corpus(root: Path) -> list[str]:
    """7 good videos (several codecs and containers) and a bad file of each kind in ``BAD``."""
    (root / "sub").mkdir(parents=True)
    noise_video(root / "a.mp4", 1, 8, 4)
    noise_video(root / "b_portrait.mov", 2, 6, 3, size=(64, 36))
    make_video(root / "c_odd.webm", 6, 3, size=(33, 47))
    noise_video(root / "d.avi", 4, 6, 3, codec="mpeg4")
    noise_video(root / "sub" / "e.mkv", 5, 5, 10)
    noise_video(root / "f_one_frame.mp4", 6, 1, 25)
    noise_video(root / "g.mp4", 7, 6, 2)
    good = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    noise_video(root / HANG, 8, 6, 3)
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n")
    noise_video(root / "long.mkv", 9, 40, 10)
    data = (root / "long.mkv").read_bytes()
    (root / "truncated.mkv").write_bytes(data[: len(data) // 2])
    (root / "long.mkv").unlink()
    (root / "broken_link.mp4").symlink_to(root / "does-not-exist.mp4")
    os.mkfifo(root / "fifo.mp4")
    return good


@pytest.fixture(scope="module")
def hang_environment():
    """The hang rule in this process's environment, so the Ray instances started here inherit it."""
    saved = {name: os.environ.get(name) for name in HANG_ENV}
    os.environ.update(HANG_ENV)
    yield
    for name, value in saved.items():
        os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("ray-corpus") / "videos"
    return root, build_corpus(root)


@pytest.fixture(scope="module")
def encoder():
    from muse_infer import VideoEncoder

    return VideoEncoder("tiny", device="cpu", max_frames=FRAMES)


@pytest.fixture(scope="module")
def reference(hang_environment, corpus, encoder, tmp_path_factory) -> Path:
    """The local engine's index of the corpus: what every Ray run must give."""
    from muse_infer.jobs.encode import encode_folder

    root, good = corpus
    out = tmp_path_factory.mktemp("local") / "emb.npy"
    options = dict(batch_size=BATCH, workers=1, timeout=TIMEOUT, chunk_size=SHARD, progress=False)
    summary = encode_folder(root, out, encoder, **options)
    assert summary.encoded == len(good) and {f["path"] for f in summary.failures} == set(BAD)
    return out


@pytest.fixture(scope="module")
def ray_cluster(hang_environment):
    """A private 2-CPU Ray instance started in this process (as the engine starts one); its address."""
    import ray

    from muse_infer.jobs.ray_cluster import ray_connection

    with ray_connection(None, num_cpus=2):
        temp_dir = ray._private.worker._global_node.get_temp_dir_path()
        yield ray.get_runtime_context().gcs_address
    assert_no_leftovers(lambda: instance_processes(temp_dir))


def instance_processes(temp_dir: str) -> list[str]:
    """ "PID: command" of the processes of the instance whose files are in ``temp_dir``, but this one."""
    from muse_infer.jobs.ray_watchdog import instance_processes as pids

    return [f"{pid}: {command_line(pid)}" for pid in pids(None, temp_dir, spare=(os.getpid(),))]


def session_processes(session: int) -> list[str]:
    """ "PID: command" of the processes in the session ``session`` (a run started in one of its own
    keeps its whole Ray instance there: Ray's processes change their group, not their session)."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[3]) == session:
            found.append(f"{name}: {command_line(int(name))}")
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()[:100]
    except OSError:
        return "?"


def assert_no_leftovers(find, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while leftovers := find():
        assert time.monotonic() < deadline, f"Ray processes left behind: {leftovers}"
        time.sleep(0.2)


def load_index(out: Path) -> tuple[np.ndarray, dict, list[dict]]:
    import pyarrow.parquet as pq

    failures = [json.loads(line) for line in out.with_suffix(".failures.jsonl").read_text().splitlines()]
    sidecar = json.loads(out.with_suffix(".json").read_text())
    sidecar["paths"] = pq.read_table(out.with_suffix(".rows.parquet")).column("path").to_pylist()
    return np.load(out), sidecar, failures


def assert_same_index(out: Path, reference: Path) -> None:
    """Same paths, rows, failures (reasons word for word) and sidecar as the local engine's index.

    Rows are compared bit for bit: with the tiny model on CPU a row does not depend on its batch
    (see muse_infer.jobs.ray_engine), so the Ray engine's shard-bound batches give the same bits.
    """
    embeddings, sidecar, failures = load_index(out)
    expected, expected_sidecar, expected_failures = load_index(reference)
    assert sidecar["paths"] == expected_sidecar["paths"]
    np.testing.assert_array_equal(embeddings, expected)
    assert failures == expected_failures
    names = ("embeddings_file", "failures_file", "rows_file")  # named after EMB.npy
    assert {k: v for k, v in sidecar.items() if k not in names} == {
        k: v for k, v in expected_sidecar.items() if k not in names
    }
    assert not Path(str(out) + ".parts").exists()
    thumbnails, expected_thumbnails = (
        sorted(p.name for p in Path(str(o)[:-4] + ".thumbs").rglob("*")) for o in (out, reference)
    )
    assert (
        thumbnails == expected_thumbnails and thumbnails
    )  # made by the driver, as the local engine makes them


def start_cli(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, *map(str, args)],
        env={**os.environ, **HANG_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its Ray processes stay in its session
    )


def kill_driver(process: subprocess.Popen) -> None:
    """SIGKILL the driver alone (as `kill -9 PID` does), then check that its Ray instance went too."""
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert_no_leftovers(lambda: session_processes(process.pid))


def wait_for_shards(parts: Path, count: int, process: subprocess.Popen, limit: float = 180) -> None:
    deadline = time.monotonic() + limit
    while len(list(parts.glob("chunk-*.npz"))) < count:
        assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()}"
        assert time.monotonic() < deadline, "no shard was written"
        time.sleep(0.05)


# --- The command with a private instance a run: the driver killed, the command run again ---------


@pytest.mark.slow  # 31 s; test_kill_and_resume_equals_a_clean_run covers the local engine's resume
def test_driver_killed_at_random_moments_then_rerun_gives_the_local_index(corpus, reference, tmp_path):
    """kill -9 of the driver once while it starts (Ray, the folder walk, the plan) and once while it
    works (after a shard is written: decoding, embedding, writing), each at a random moment."""
    root, _ = corpus
    out, parts = tmp_path / "emb.npy", tmp_path / "emb.npy.parts"
    command = ["encode-videos", root, "--out", out, *OPTIONS]
    seed = int(os.environ.get("MUSE_TEST_KILL_SEED", random.randrange(1000)))
    early, late = random.Random(seed).uniform(0.5, 12.0), random.Random(seed).uniform(0.0, 3.0)
    process = start_cli(*command)
    time.sleep(early)
    if process.poll() is None:
        kill_driver(process)
    process = start_cli(*command)
    wait_for_shards(parts, len(list(parts.glob("chunk-*.npz"))) + 1, process)
    time.sleep(late)
    if process.poll() is None:
        kill_driver(process)
    process = start_cli(*command)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, f"kill seed {seed} ({early:.1f} s, {late:.1f} s)\n{stderr}"
    assert "Traceback" not in stderr and "skipped 6" in stderr and "emb.failures.jsonl" in stderr
    assert_same_index(out, reference)
    assert_no_leftovers(lambda: session_processes(process.pid))


# --- One instance shared by the rest --------------------------------------------------------------


def test_ray_run_gives_the_local_index_and_failures(
    corpus, reference, encoder, ray_cluster, tmp_path, caplog
):
    from muse_infer.jobs.ray_engine import encode_folder_ray

    root, good = corpus
    out = tmp_path / "emb.npy"
    caplog.set_level(logging.INFO, logger="muse_infer.jobs.ray_engine")
    summary = encode_folder_ray(root, out, encoder, BATCH, timeout=TIMEOUT, chunk_size=SHARD, progress=False)
    assert (summary.exit_code, summary.encoded_now, summary.reused) == (1, len(good), 0)
    # the phase `muse-infer -v` shows (and benchmarks/bench_ray.py --startup reads), once
    assert caplog.text.count("ray engine: first result after ") == 1
    failures = {f["path"]: f["reason"] for f in load_index(out)[2]}
    assert set(failures) == set(BAD) and all(BAD[path] in failures[path] for path in BAD)
    assert_same_index(out, reference)


def test_readme_ray_command_as_written_gives_the_local_index_without_loading_the_model(
    tmp_path, ray_cluster, monkeypatch
):
    """The README's `muse-infer encode-videos videos/ --out emb.npy --engine ray` (no --batch-size, no
    --precision; the model named so it runs offline) gives the local engine's index, bit for bit; its
    sidecar records the precision the workers computed in; the driver never loads the model's weights
    (loading it here fails) nor decides the precision (it would decide the opposite here)."""
    from muse_infer.runtime import precision as precision_module
    from muse_infer.runtime.torch_backend import TorchBackend

    root = small_folder(tmp_path / "videos")
    model = ["--model", "tiny", "--clip-weights", "random"]
    local = invoke("encode-videos", root, "--out", tmp_path / "local.npy", *model, "-q")
    assert local.exit_code == 1, local.output  # bad.mp4 skipped
    workers_precision = load_index(tmp_path / "local.npy")[1]["precision"]
    assert workers_precision == ("bf16" if precision_module.cpu_has_native_bf16() else "fp32")

    def no_weights_here(*args, **kwargs):
        raise AssertionError("the driver loaded the model")

    monkeypatch.setattr(TorchBackend, "from_spec", classmethod(no_weights_here))
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda *a: workers_precision != "bf16")
    result = invoke("encode-videos", root, "--out", tmp_path / "emb.npy", *model, "-q", "--engine", "ray")
    assert result.exit_code == 1, result.output
    assert "loading model" not in result.output
    assert_same_index(tmp_path / "emb.npy", tmp_path / "local.npy")
    assert load_index(tmp_path / "emb.npy")[1]["precision"] == workers_precision


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_ray_engine_computes_in_the_precision_asked_as_the_local_engine(tmp_path, ray_cluster, precision):
    root = small_folder(tmp_path / "videos")
    options = ["--model", "tiny", "--clip-weights", "random", "--precision", precision, "-q"]
    invoke("encode-videos", root, "--out", tmp_path / "local.npy", *options)
    invoke("encode-videos", root, "--out", tmp_path / "ray.npy", *options, "--engine", "ray")
    assert load_index(tmp_path / "ray.npy")[1]["precision"] == precision
    assert_same_index(tmp_path / "ray.npy", tmp_path / "local.npy")


def small_folder(root: Path) -> Path:
    """6 good videos and a bad file: quick to encode, free to change."""
    root.mkdir()
    for seed, name in enumerate(["a.mp4", "c.mp4", "e.mkv", "g.webm", "i.mp4", "k.mp4"]):
        noise_video(root / name, seed, 4, 2)
    (root / "bad.mp4").write_text("not a video")
    return root


SMALL_OPTIONS = dict(batch_size=BATCH, timeout=TIMEOUT, chunk_size=2, progress=False)


def interrupted_ray_run(root: Path, out: Path, encoder) -> None:
    """A Ray run stopped by Ctrl-C once its first shard is written (the shards written are kept)."""
    from muse_infer.jobs.ray_engine import encode_folder_ray

    interrupter = threading.Thread(target=interrupt_after_a_shard, args=(Path(str(out) + ".parts"),))
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        encode_folder_ray(root, out, encoder, **SMALL_OPTIONS)
    interrupter.join()
    assert list(Path(str(out) + ".parts").glob("chunk-*.npz"))


@pytest.fixture
def plans(monkeypatch) -> list:
    """(plan, resumed) of each Ray run from now on."""
    from muse_infer.jobs import ray_engine, shards

    made = []

    def plan_work(*args):
        made.append(shards.plan_work(*args))
        return made[-1]

    monkeypatch.setattr(ray_engine, "plan_work", plan_work)
    return made


def test_interrupted_run_takes_its_plan_up_again(tmp_path, encoder, ray_cluster, plans):
    from muse_infer.jobs.encode import encode_folder
    from muse_infer.jobs.ray_engine import encode_folder_ray

    root, out = small_folder(tmp_path / "videos"), tmp_path / "ray.npy"
    interrupted_ray_run(root, out, encoder)
    summary = encode_folder_ray(root, out, encoder, **SMALL_OPTIONS)
    (first, resumed_first), (again, resumed) = plans
    assert not resumed_first and resumed and again.plan_id == first.plan_id
    assert 0 < len(again.shards) < len(first.shards) and summary.reused == 6 - summary.encoded_now
    encode_folder(root, tmp_path / "local.npy", encoder, workers=1, **SMALL_OPTIONS)
    assert_same_index(out, tmp_path / "local.npy")


@pytest.mark.slow
def test_new_and_changed_files_get_a_new_plan(tmp_path, encoder, ray_cluster, plans):
    from muse_infer.jobs.encode import encode_folder
    from muse_infer.jobs.ray_engine import encode_folder_ray

    root, out = small_folder(tmp_path / "videos"), tmp_path / "ray.npy"
    interrupted_ray_run(root, out, encoder)
    encode_folder_ray(root, out, encoder, **SMALL_OPTIONS)
    local = tmp_path / "local.npy"  # the same history on the local engine: the grown index's row order
    encode_folder(root, local, encoder, workers=1, **SMALL_OPTIONS)
    noise_video(root / "b_added.mp4", 21, 4, 2)  # sorts between existing files
    noise_video(root / "c.mp4", 22, 6, 3)  # replaced by another video
    summary = encode_folder_ray(root, out, encoder, **SMALL_OPTIONS)
    _, _, (new, resumed) = plans
    assert not resumed and (summary.reused, summary.encoded_now) == (5, 2)
    assert new.shards[0].id == 1  # chunk 0 holds the finished index, taken up into a new work folder
    encode_folder(root, local, encoder, workers=1, **SMALL_OPTIONS)
    assert_same_index(out, local)


@pytest.mark.slow
def test_the_local_engine_finishes_what_the_ray_engine_started(tmp_path, encoder, ray_cluster):
    from muse_infer.jobs.encode import encode_folder

    root, out = small_folder(tmp_path / "videos"), tmp_path / "emb.npy"
    interrupted_ray_run(root, out, encoder)
    summary = encode_folder(root, out, encoder, workers=1, **SMALL_OPTIONS)
    assert summary.reused > 0 and summary.reused + summary.encoded_now == 6
    encode_folder(root, tmp_path / "local.npy", encoder, workers=1, **SMALL_OPTIONS)
    assert_same_index(out, tmp_path / "local.npy")


def interrupt_after_a_shard(parts: Path) -> None:
    """Ctrl-C for the main thread once the first shard is written."""
    import _thread

    deadline = time.monotonic() + 120
    while not list(parts.glob("chunk-*.npz")) and time.monotonic() < deadline:
        time.sleep(0.02)
    _thread.interrupt_main()


@pytest.mark.slow
def test_killed_model_actor_and_decode_task_are_retried(corpus, reference, encoder, ray_cluster, tmp_path):
    from muse_infer.jobs.ray_engine import encode_folder_ray

    root, _ = corpus
    out = tmp_path / "emb.npy"
    titles = ["ray::MapWorker(MapBatches(ShardEmbedder))", "ray::Map(decode_shard)"]
    killer = WorkerKiller(Path(str(out) + ".parts"), titles, at_once=("ray::Map(decode_shard)",))
    killer.start()
    try:
        summary = encode_folder_ray(
            root, out, encoder, BATCH, timeout=TIMEOUT, chunk_size=SHARD, progress=False
        )
    finally:
        killer.stop()
    assert len(killer.killed) == 2, f"killed {killer.killed}"
    assert summary.encoded_now == summary.encoded and summary.exit_code == 1
    assert_same_index(out, reference)


@pytest.mark.slow
def test_a_model_other_than_the_drivers_on_a_worker_is_one_clear_error(
    corpus, ray_cluster, tmp_path, monkeypatch
):
    from muse_infer.jobs import ray_engine

    of = ray_engine.ActorModel.of

    def other_weights(spec):  # as if a node saw another file at the model's path
        model = of(spec)
        return replace(model, identity={**model.identity, "clip_weights": "sha256:0123"})

    monkeypatch.setattr(ray_engine.ActorModel, "of", other_weights)
    root, _ = corpus
    result = invoke("encode-videos", root, "--out", tmp_path / "emb.npy", *OPTIONS)
    assert result.exit_code == 2, result.output
    assert "is not the driver's (clip_weights: 'sha256:0123' vs" in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1


class WorkerKiller(threading.Thread):
    """SIGKILLs one Ray worker process of each title prefix (of this process's instance only): those in
    ``at_once`` as soon as one is seen, the others once a shard is written. Work in flight there is
    lost, and Ray must redo it. Why decode workers at once: with Ray warm, the last decode task can end
    before the first shard is written, leaving none to kill."""

    def __init__(self, parts: Path, titles: list[str], at_once: tuple[str, ...] = ()):
        import ray

        super().__init__(daemon=True)
        self.parts, self.titles, self.killed, self.stopping = parts, list(titles), [], False
        self.at_once = set(at_once)
        self.temp_dir = ray._private.worker._global_node.get_temp_dir_path()

    def run(self) -> None:
        while not self.stopping and self.titles:
            shard_written = bool(list(self.parts.glob("chunk-*.npz")))
            wanted = [t for t in self.titles if shard_written or t in self.at_once]
            for process in instance_processes(self.temp_dir) if wanted else ():
                pid, command = process.split(": ", 1)
                title = next((t for t in wanted if command.startswith(t)), None)
                if title is not None:
                    os.kill(int(pid), signal.SIGKILL)
                    self.killed.append(command)
                    self.titles.remove(title)
                    wanted.remove(title)
            time.sleep(0.05)

    def stop(self) -> None:
        self.stopping = True
        self.join()


# --- Without Ray ----------------------------------------------------------------------------------


def entries(*names: str, mtime: int = 1):
    from muse_infer.jobs.encode import Entry

    return [Entry(name, 100, mtime) for name in names]


def test_shard_plan_is_taken_up_again_only_for_the_same_remaining_work(tmp_path):
    from muse_infer.jobs.shards import plan_work

    todo = entries(*[f"v{i:02d}.mp4" for i in range(10)])
    plan, resumed = plan_work(tmp_path, todo, 4, taken_ids={0, 1})
    assert not resumed and [s.id for s in plan.shards] == [2, 3, 4]
    assert [len(s.entries) for s in plan.shards] == [4, 4, 2]
    assert [e for s in plan.shards for e in s.entries] == todo
    # Killed after shard 3 was written: its four videos are done, the rest is the plan's.
    rest = todo[:4] + todo[8:]
    again, resumed = plan_work(tmp_path, rest, 5, taken_ids={0, 1, 3})
    assert resumed and again.plan_id == plan.plan_id and again.shards == (plan.shards[0], plan.shards[2])
    # A changed file, an added one, or a chunk file in the way of an unfinished shard: a new plan,
    # numbered above everything seen so far.
    changed = entries("v00.mp4", mtime=2) + rest[1:]
    for remaining, taken in [
        (changed, {0, 1, 3}),
        (rest + entries("v99.mp4"), {0, 1, 3}),
        (rest, {0, 1, 2, 3}),
    ]:
        fresh, resumed = plan_work(tmp_path, remaining, 5, taken_ids=taken)
        assert (
            not resumed
            and fresh.shards[0].id == 5
            and [e for s in fresh.shards for e in s.entries] == remaining
        )
        (tmp_path / "plan.json").unlink()
        plan_work(tmp_path, todo, 4, taken_ids={0, 1})  # back to the first plan for the next case


def test_a_broken_plan_file_is_replaced(tmp_path):
    from muse_infer.jobs.shards import plan_work

    (tmp_path / "plan.json").write_text('{"format": "muse-infer-shard-plan", "shards": [[1, 2]')
    plan, resumed = plan_work(tmp_path, entries("a.mp4", "b.mp4"), 1, taken_ids=set())
    assert not resumed and [s.id for s in plan.shards] == [0, 1]
    assert json.loads((tmp_path / "plan.json").read_text())["plan"] == plan.plan_id


@pytest.mark.parametrize(
    "resources, device, actors, expected",
    [
        ({"CPU": 2}, "auto", None, (1, 0, 1.0, "cpu")),
        ({"CPU": 16, "GPU": 4}, "auto", None, (4, 1, 1.0, "cuda")),
        ({"CPU": 16, "GPU": 4}, "cuda:1", 2, (2, 1, 1.0, "cuda")),
        ({"CPU": 16, "GPU": 4}, "cpu", 3, (3, 0, 1.0, "cpu")),
        ({"CPU": 2, "GPU": 1}, "cuda", 2, "has 1 GPUs"),
        ({"CPU": 8}, "cuda", None, "has no GPU"),
        ({"CPU": 1}, "cpu", None, (1, 0, 0.0, "cpu")),  # a 1-CPU instance: the CPU decodes
        ({"CPU": 4}, "auto", 4, (4, 0, 0.75, "cpu")),
        ({"CPU": 6, "GPU": 8}, "auto", None, (8, 1, 0.625, "cuda")),
        ({"CPU": 0.5}, "auto", None, "needs at least one"),
    ],
)
def test_actor_layout(resources, device, actors, expected):
    from muse_infer.errors import RayEngineError
    from muse_infer.jobs.ray_cluster import ActorLayout, actor_layout

    if isinstance(expected, str):
        with pytest.raises(RayEngineError, match=expected):
            actor_layout(resources, device, actors)
    else:
        assert actor_layout(resources, device, actors) == ActorLayout(*expected)


def test_a_shard_too_big_for_every_node_is_refused():
    from muse_infer.errors import RayEngineError
    from muse_infer.jobs.ray_cluster import check_decode_memory

    check_decode_memory([4e9, 8e9], needed=int(7e9), shard_size=1000)
    with pytest.raises(RayEngineError, match="--chunk-size 1000: a decode task holds 8.4 GiB"):
        check_decode_memory([4e9, 8e9], needed=int(9e9), shard_size=1000)


def invoke(*args):
    from click.testing import CliRunner

    from muse_infer.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def test_without_ray_the_error_names_the_extra(monkeypatch, tmp_path):
    from muse_infer.errors import MissingExtraError
    from muse_infer.jobs.ray_cluster import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(MissingExtraError, match=r'pip install "muse-infer\[ray\]"'):
        import_ray()
    result = invoke("encode-videos", tmp_path, "--out", tmp_path / "e.npy", "--engine", "ray")
    assert result.exit_code == 2 and "ray extra" in result.output


def test_ray_options_need_the_ray_engine(tmp_path):
    result = invoke("encode-videos", tmp_path, "--out", tmp_path / "e.npy", "--address", "auto")
    assert result.exit_code == 2 and "--engine ray" in result.output


def test_an_address_where_nothing_answers_is_refused_at_once(ray_cluster):
    from muse_infer.jobs.ray_cluster import _unreachable

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert "nothing answers at 127.0.0.1" in _unreachable(f"127.0.0.1:{port}")
    assert "nothing answers" in _unreachable(f"ray://127.0.0.1:{port}")
    assert "expected HOST:PORT" in _unreachable("my-cluster")
    assert _unreachable(ray_cluster) is None  # (Ray itself would wait without end)


# --- Two nodes on loopback, one of them killed mid-run (slow) -------------------------------------


@pytest.mark.slow
def test_two_node_cluster_loses_a_worker_node_mid_run(corpus, reference, tmp_path):
    """A head and a worker node (separate temporary folders, loopback addresses Ray keeps as they are),
    the worker node killed (all its processes, SIGKILL) once a shard is written: Ray redoes its work
    on the head, and the index is the local engine's."""
    root, _ = corpus
    env = {**os.environ, **HANG_ENV, "RAY_AUTH_MODE": "disabled"}  # a loopback-only test cluster
    port = free_port("127.0.0.2")
    head = start_node(
        ["--head", "--port", port, "--include-dashboard", "false"], "127.0.0.2", tmp_path / "h", env
    )
    nodes = [head]
    try:
        nodes.append(start_node(["--address", f"127.0.0.2:{port}"], "127.0.0.3", tmp_path / "w.log", env))
        out = tmp_path / "emb.npy"
        command = [
            *CLI,
            "encode-videos",
            root,
            "--out",
            out,
            *OPTIONS,
            "--chunk-size",
            2,
            "--address",
            f"127.0.0.2:{port}",
        ]
        driver = subprocess.Popen(list(map(str, command)), env=env, stderr=subprocess.PIPE, text=True)
        wait_for_shards(Path(str(out) + ".parts"), 1, driver)
        assert kill_session(nodes[1].pid) >= 3  # its raylet, agents, workers...
        _, stderr = driver.communicate(timeout=600)
        assert driver.returncode == 1, stderr
        assert_same_index(out, reference)
    finally:
        for node in nodes:
            kill_session(node.pid)
            node.wait()
    for node in nodes:
        assert_no_leftovers(lambda node=node: session_processes(node.pid))
        shutil.rmtree(node.temp_dir, ignore_errors=True)


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def start_node(args: list, address: str, log: Path, env: dict) -> subprocess.Popen:
    """`ray start ... --block` in a session of its own (its processes stay in it), once it is up.

    Its temporary folder is a short one in /tmp (Ray's socket paths must fit in 107 bytes),
    removed by ``kill_session``'s caller through ``shutil.rmtree``.
    """
    temp_dir = tempfile.mkdtemp(prefix="muse-test-ray-")
    command = ["ray", "start", *map(str, args), "--node-ip-address", address, "--num-cpus", "2"]
    command += ["--temp-dir", temp_dir, "--block"]
    with open(log, "w") as handle:
        node = subprocess.Popen(
            command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    node.temp_dir = temp_dir
    deadline = time.monotonic() + 120
    while "block forever" not in log.read_text():
        assert node.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    return node


def kill_session(session: int) -> int:
    """SIGKILL every process of a session; returns how many there were."""
    processes = session_processes(session)
    for process in processes:
        try:
            os.kill(int(process.split(":")[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(processes)
