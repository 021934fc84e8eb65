"""Running a sweep's stages as Ray tasks.

``connect`` starts Ray on this machine (no address and no ``RAY_ADDRESS``), or joins a cluster
(``HOST:PORT`` from a node of it, or ``ray://HOST:10001`` through Ray Client). Each stage is a
task with its resource needs: ``cpus`` CPUs, and a GPU for GPU runtimes (TensorRT engines are
built on one too), so that it lands only on a node that has one.

The driver submits a stage when the stages it needs have finished, and keeps every result as
it arrives (``on_result``: the sweep writes it to its cache at once). Bench stages wait until
nothing else of the sweep is left to run, and then run one per node at a time: each takes the
custom resource ``nerfexport_timer``, of which the local Ray has one and cluster nodes have one
when started with ``--resources='{"nerfexport_timer": 1}'``; on a cluster where some node lacks
it, the benches run one at a time. Each bench also measures how much of its machine's CPU other
work took while it timed (another job on the node), which the table reports as timings under load.

A failing stage fails the cells that need it, with its one-line error, and the others go on.
Ctrl-C (or SIGTERM) cancels what is pending and running and raises; what finished is kept.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import ray

from nerfexport.sweep.cells import Stage

TIMER = "nerfexport_timer"


class EngineError(RuntimeError):
    """Ray cannot be started or the cluster cannot be joined."""


def _probe(addr: str, timeout: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` where nothing listens, in one line (``ray.init`` would wait on it
    for minutes, deaf to Ctrl-C)."""
    import socket
    host, _, port = addr.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return   # "auto" and other forms: Ray's own resolution
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise EngineError(f"nothing answers at {addr} ({e.strerror or e}); start the head with "
                          f"`ray start --head --port={port}` or give its address") from None


def connect(address: str | None = None, num_cpus: int | None = None) -> tuple[bool, str]:
    """Initialise Ray unless this process already has; returns (whether we started it and must
    shut it down, where it runs). ``address`` (else ``RAY_ADDRESS``) joins a cluster; without
    either, a private Ray starts on this machine with one ``nerfexport_timer``."""
    if ray.is_initialized():
        return False, "the Ray this process had already started"
    addr = address or os.environ.get("RAY_ADDRESS") or None
    # Ray's own log lines (a warning that token authentication is on, for one) stay in its logs
    kw = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    if addr:
        import importlib.util
        if addr.startswith("ray://") and importlib.util.find_spec("grpc") is None:
            raise EngineError(f"{addr} is a Ray Client address, which needs pip install 'ray[client]' here; or run "
                              "the sweep on a node of the cluster with --address HOST:6379")
        _probe(addr)
        try:
            ray.init(address=addr, **{k: v for k, v in kw.items() if k != "include_dashboard"})
        except (ConnectionError, ValueError, ray.exceptions.RayError) as e:
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EngineError(f"cannot join the Ray cluster at {addr}: {text[:300]} (is its head running, and does "
                              "this machine have the cluster's token: RAY_AUTH_MODE=token, ~/.ray/auth_token?)") from None
        return True, f"the Ray cluster at {addr}"
    for attempt in range(3):   # Ray gives its node 30 s to start: too little on a machine busy with other work
        try:
            ray.init(address="local", num_cpus=num_cpus, resources={TIMER: 1}, **kw)
            break
        except Exception as e:
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(e):
                raise EngineError(f"could not start Ray on this machine: {str(e).strip().splitlines()[0]}") from None
    return True, "a local Ray on this machine"


def _entry(kind: str, params: dict, *deps):
    """A stage inside a Ray worker: torch threads follow the CPUs Ray gave the task."""
    try:
        n = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)) or 1
        import torch
        torch.set_num_threads(max(1, n))
    except Exception:   # no torch on this node: the stage itself will say so
        pass
    from nerfexport.sweep.stages import STAGES
    res = STAGES[kind](params, *deps)
    res["info"]["ray_node"] = ray.get_runtime_context().get_node_id()[:12]   # which node of the cluster ran it
    return res


_remote_entry = ray.remote(_entry)


def one_line(e: BaseException) -> str:
    """A stage's failure as one line: the error raised inside the task (not Ray's traceback)."""
    cause = e
    for _ in range(5):
        nxt = getattr(cause, "cause", None)
        if nxt is None or nxt is cause:
            break
        cause = nxt
    if isinstance(cause, ray.exceptions.RayError) and not isinstance(cause, ray.exceptions.RayTaskError):
        text = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}"
    else:
        msg = str(cause).strip()
        if isinstance(cause, ray.exceptions.RayTaskError):
            lines = [l for l in msg.splitlines() if l.strip()]
            msg = lines[-1] if lines else ""
        name = type(cause).__name__.replace("RayTaskError(", "").rstrip(")")
        first = msg.splitlines()[0] if msg else ""
        text = first if type(cause).__module__.startswith("nerfexport.") else f"{name}: {first}".rstrip(": ")
    return text[:400]


@dataclass
class Failure:
    error: str


@dataclass
class EngineReport:
    executed: dict[str, int] = field(default_factory=dict)   # stage kind -> tasks run
    failed: dict[str, int] = field(default_factory=dict)
    timer: str = ""                                          # how the benches were kept apart
    nodes: int = 0


def cluster_has_gpu() -> bool:
    return float(ray.cluster_resources().get("GPU", 0)) > 0


def timer_mode() -> tuple[str, int]:
    """``"per-node"`` when every alive node has a ``nerfexport_timer``, else ``"one at a time"``;
    and the number of alive nodes."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    every = bool(nodes) and all(float(n.get("Resources", {}).get(TIMER, 0)) >= 1 for n in nodes)
    return ("per-node" if every else "one at a time"), len(nodes)


def run_stages(stages: dict[str, Stage], done: dict[str, object], cpus: int = 1,
               on_result: Callable[[Stage, object], None] | None = None,
               sources: dict[str, bytes] | None = None) -> EngineReport:
    """Run every stage of ``stages`` not in ``done`` (key -> result dict, loaded from the cache),
    in dependency order; ``on_result(stage, result_or_Failure)`` is called as each ends.
    ``sources``: scene name -> the teacher checkpoint's bytes (checkpoint scenes)."""
    emit = on_result or (lambda s, r: None)
    rep = EngineReport()
    rep.timer, rep.nodes = timer_mode()
    gpu_ok = cluster_has_gpu()
    _check_cpus(cpus)
    refs: dict[str, ray.ObjectRef] = {}
    outcome: dict[str, object] = dict(done)
    todo = [k for k in stages if k not in done]
    inflight: dict[ray.ObjectRef, str] = {}

    def ref_of(key: str):
        if key not in refs:
            refs[key] = ray.put(outcome[key])
        return refs[key]

    def finish(key: str, res) -> None:
        outcome[key] = res
        st = stages[key]
        if isinstance(res, Failure):
            rep.failed[st.kind] = rep.failed.get(st.kind, 0) + 1
        emit(st, res)

    def ready(st: Stage) -> bool:
        return all(d in outcome for d in st.deps + st.soft)

    def submit(st: Stage) -> None:
        bad = next((outcome[d] for d in st.deps if isinstance(outcome[d], Failure)), None)
        if bad is not None:
            finish(st.key, Failure(bad.error))
            return
        if st.gpu and not gpu_ok:
            finish(st.key, Failure("needs a GPU, and no node of the Ray cluster has one"))
            return
        args = [ref_of(d) for d in st.deps] + [ref_of(d) for d in st.soft if not isinstance(outcome[d], Failure)]
        if st.kind == "teacher" and (sources or {}).get(st.scene) is not None:
            args.append(ray.put(sources[st.scene]))
        opts = {"num_cpus": cpus, "num_gpus": 1 if st.gpu else 0, "max_retries": 1}
        if st.kind == "bench" and rep.timer == "per-node":
            opts["resources"] = {TIMER: 1}
        ref = _remote_entry.options(**opts).remote(st.kind, st.params, *args)
        refs[st.key] = ref
        inflight[ref] = st.key
        rep.executed[st.kind] = rep.executed.get(st.kind, 0) + 1

    try:
        while todo or inflight:
            computing = any(stages[k].kind != "bench" for k in todo) or any(
                stages[k].kind != "bench" for k in inflight.values())
            benches = sum(stages[k].kind == "bench" for k in inflight.values())
            for key in list(todo):
                st = stages[key]
                if not ready(st):
                    continue
                if st.kind == "bench" and (computing or (rep.timer != "per-node" and benches >= 1)):
                    continue
                todo.remove(key)
                submit(st)
                benches += st.kind == "bench" and key in refs
            if not inflight:
                if todo and not any(ready(stages[k]) for k in todo):
                    for key in todo:   # cannot happen with a plan from cells.plan (deps come first)
                        finish(key, Failure("a stage it needs is not in the sweep"))
                    todo.clear()
                continue
            for ref in ray.wait(list(inflight), num_returns=1, timeout=None)[0]:
                key = inflight.pop(ref)
                res = _result(ref)
                if isinstance(res, Failure):
                    refs.pop(key, None)
                finish(key, res)
    except BaseException:   # Ctrl-C, SIGTERM: stop what is pending and running; the finished stay kept
        _cancel(list(inflight))
        raise
    return rep


def _check_cpus(cpus: int) -> None:
    """Refuse ``cpus`` a task when no alive node of the cluster has that many (Ray would wait
    for one forever)."""
    most = max((float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=0.0)
    if cpus > most:
        raise EngineError(f"[sweep] cpus = {cpus}, but the largest node of the Ray cluster has {most:g} CPUs")


def _result(ref):
    """A finished task's result, or its :class:`Failure` (the stage's own error, or a lost worker)."""
    try:
        return ray.get(ref)
    except (ray.exceptions.RayError, Exception) as e:
        return Failure(one_line(e))


def _cancel(refs: list) -> None:
    """Cancel the tasks ``refs`` (pending or running), ignoring those that cannot be."""
    for ref in refs:
        try:
            ray.cancel(ref, force=True)
        except Exception:
            pass


def shutdown(started: bool) -> None:
    if started and ray.is_initialized():
        ray.shutdown()


def wait_for_nodes(n: int, timeout: float = 30.0) -> int:
    """Alive nodes of the cluster, waiting up to ``timeout`` for ``n`` of them."""
    t = time.monotonic()
    while True:
        alive = sum(1 for x in ray.nodes() if x.get("Alive"))
        if alive >= n or time.monotonic() - t > timeout:
            return alive
        time.sleep(0.5)
