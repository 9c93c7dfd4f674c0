"""Ray for the Ray engine: importing it, connecting to a cluster or starting a private one, and
deciding how many model actors of which kind the cluster can hold.

- ``address=None``: a private local instance (``ray.init(address="local")``, never someone else's),
  stopped at the end; a watchdog process (``ray_watchdog``) stops it too if this process is killed,
  even with SIGKILL, so no Ray process outlives the command.
- ``address="auto"`` (the cluster ``ray start`` made on this machine), ``"HOST:PORT"`` (its GCS) or
  ``"ray://HOST:PORT"`` (Ray Client): that cluster, only disconnected from at the end.
- A process that has already called ``ray.init`` keeps its connection, and it is left open.

Ray is an optional extra (``pip install "muse-infer[ray]"``): it is imported here, lazily.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import MissingExtraError, RayEngineError
from .ray_watchdog import INSTANCE_VARIABLE

INSTALL_HINT = 'install the ray extra: pip install "muse-infer[ray]" (in a checkout: pip install -e ".[ray]")'
LOOPBACK_NODE_ADDRESS = "127.0.0.2"  # see _loopback_node
PROBE_SECONDS = 10.0  # how long a cluster address may take to accept a connection

logger = logging.getLogger(__name__)


def import_ray():
    """The ``ray`` module with Ray Data, or ``MissingExtraError`` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise MissingExtraError(
            f"--engine ray needs Ray Data, which cannot be imported here ({error}); {INSTALL_HINT}"
        ) from None
    return ray


@contextmanager
def ray_connection(address: str | None = None, num_cpus: int | None = None) -> Iterator[object]:
    """``ray``, connected for the duration (see the module docstring for ``address``).

    num_cpus: logical CPUs of a private local instance (default: this machine's cores).
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address is None:
        with _private_instance(ray, num_cpus):
            yield ray
        return
    _connect(ray, address)
    try:
        yield ray
    finally:
        ray.shutdown()


def _connect(ray, address: str) -> None:
    problem = _unreachable(address)
    if problem is None:
        try:
            ray.init(address=address, logging_level=logging.WARNING)
            return
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as error:
            problem = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise RayEngineError(
        f"--address {address}: cannot connect to a Ray cluster ({problem}); start one with "
        "`ray start --head` (then --address auto), or leave out --address for a local instance "
        "(a cluster with token authentication also needs RAY_AUTH_MODE=token here, and its token)"
    )


def _unreachable(address: str) -> str | None:
    """Why nothing answers at ``address``'s host and port, or None when something does (or it is unknown).

    Ray's own connection attempt waits without end when nothing listens there, hence this probe.
    """
    target = address.removeprefix("ray://")
    if target == "auto":
        try:  # the address `ray start` left on this machine (Ray's own lookup; not a public API)
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address("auto") or ""
        except Exception:  # noqa: BLE001 - no lookup: let ray.init say what it finds
            return None
        if not target:
            return "no cluster started on this machine and RAY_ADDRESS is not set"
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return None if "://" in target else f"expected HOST:PORT, got {target!r}"
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()
    except OSError as error:
        return f"nothing answers at {host}:{port}: {error.strerror or error}"
    return None


@contextmanager
def _private_instance(ray, num_cpus: int | None) -> Iterator[None]:
    """A local instance in its own temporary folder, every process of it tagged for the watchdog."""
    temp_dir = tempfile.mkdtemp(prefix="muse-ray-")
    tag = f"{os.getpid()}-{secrets.token_hex(6)}"
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "muse_infer.jobs.ray_watchdog", tag, temp_dir, str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives a kill of this process's group, to clean up after it
        env=_package_env(),
    )
    try:
        started = time.monotonic()
        with _tagged_environment(tag):
            ray.init(
                address="local",
                num_cpus=num_cpus or max(2, os.cpu_count() or 1),  # logical: a model actor + a decoder
                include_dashboard=False,
                logging_level=logging.ERROR,  # not its token-authentication notice: the instance is ours
                _temp_dir=temp_dir,
                **_loopback_node(),
            )
        logger.info("ray engine: instance up in %.2f s", time.monotonic() - started)
        yield
    finally:
        stopping = time.monotonic()
        if ray.is_initialized():
            ray.shutdown()
        watchdog.stdin.close()  # the watchdog kills what shutdown left and removes temp_dir
        try:
            watchdog.wait(timeout=60)
        except subprocess.TimeoutExpired:
            shutil.rmtree(temp_dir, ignore_errors=True)
        logger.info("ray engine: instance stopped in %.2f s", time.monotonic() - stopping)


def _loopback_node() -> dict:
    """On Linux, the private instance's processes talk over loopback only: node address 127.0.0.2.

    Ray turns 127.0.0.1 (and "localhost") into the machine's network address, so its processes would
    connect to each other through that; any other 127.x.y.z address is loopback on Linux and kept.
    """
    return {"_node_ip_address": LOOPBACK_NODE_ADDRESS} if sys.platform.startswith("linux") else {}


def _package_env() -> dict:
    """This environment, with this package importable (it may run from a checkout, not installed)."""
    env = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    env.pop(INSTANCE_VARIABLE, None)
    return env


@contextmanager
def _tagged_environment(tag: str) -> Iterator[None]:
    """``MUSE_RAY_INSTANCE=tag`` in the environment while the instance starts: its processes inherit it."""
    previous = os.environ.get(INSTANCE_VARIABLE)
    os.environ[INSTANCE_VARIABLE] = tag
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(INSTANCE_VARIABLE, None)
        else:
            os.environ[INSTANCE_VARIABLE] = previous


@dataclass(frozen=True)
class ActorLayout:
    """The model actors: how many, what each reserves (``gpus`` 0 or 1, ``cpus``), the device inside."""

    actors: int
    gpus: int
    cpus: float
    device: str


def actor_layout(
    resources: dict, device: str, actors: int | None, cpus_per_actor: float = 1.0
) -> ActorLayout:
    """The actor pool for a cluster with ``resources`` (``ray.cluster_resources()``).

    device "auto": one GPU per actor when the cluster has GPUs (default: as many actors as GPUs),
    else CPU actors (default: one); "cpu": CPU actors; "cuda"/"cuda:N": GPU actors, which Ray gives
    one GPU each (seen as "cuda" inside). Each actor reserves ``cpus_per_actor`` CPUs, or an equal
    share of all but one when the cluster has fewer (a small instance): one CPU always stays free
    for decoding, or the decode tasks would wait for ever.
    """
    cluster_gpus, cluster_cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    wants_gpu = device.startswith("cuda") or (device == "auto" and cluster_gpus > 0)
    if actors is not None and actors < 1:
        raise RayEngineError(f"--actors must be at least 1, got {actors}")
    if wants_gpu and cluster_gpus == 0:
        raise RayEngineError(f"--device {device}: the Ray cluster has no GPU; use --device auto or cpu")
    if cluster_cpus < 1:
        raise RayEngineError(f"the Ray cluster has {cluster_cpus:g} CPUs: decoding needs at least one")
    count = actors or (cluster_gpus if wants_gpu else 1)
    if wants_gpu and count > cluster_gpus:
        raise RayEngineError(f"--actors {count}: the Ray cluster has {cluster_gpus} GPUs, one per actor")
    cpus = min(float(cpus_per_actor), (cluster_cpus - 1) / count)
    return ActorLayout(count, 1 if wants_gpu else 0, cpus, "cuda" if wants_gpu else "cpu")


def check_decode_memory(node_memory: list[float], needed: int, shard_size: int) -> None:
    """RayEngineError when no node (``memory`` resource of each, bytes) can run a decode task that
    reserves ``needed`` bytes: Ray would wait for such a node for ever."""
    if node_memory and needed > max(node_memory):
        raise RayEngineError(
            f"--chunk-size {shard_size}: a decode task holds {needed / 2**30:.1f} GiB of clips, more than "
            f"any node of the Ray cluster offers ({max(node_memory) / 2**30:.1f} GiB); use a smaller --chunk-size"
        )
