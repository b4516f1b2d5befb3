"""Running the units of a reproduced table here or in ``jobs`` worker processes.

With ``jobs`` > 1 each worker is a ``spawn``-ed process (torch's thread pools do not survive
``fork``; ``min(jobs, units)`` of them) that takes ``cores // workers`` threads for torch and
the BLAS libraries (set in the
environment before it starts, and with ``torch.set_num_threads``): oversubscribed torch
processes slow down by an order of magnitude. The parent sends each idle worker its next
ready unit over the worker's own pipe (``actrec.worker_links``: a worker that dies mid-message
cannot silence the others; a unit runs once, and the parent always knows which unit a worker
holds); their progress bars are forwarded to the parent's display. A unit that fails is a
result with its reason, and the others go on; a worker that dies (killed, out of memory) fails
the unit it held, and a fresh worker takes its place. Workers die with the parent (Linux
``PR_SET_PDEATHSIG``), so killing the command stops the grid; finished units stay finished.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any

from actrec.extract_workers import apply_thread_limit, child_thread_env, thread_share
from actrec.worker_links import die_with_parent

__all__ = ["run_units"]


class _ForwardedProgress:
    """The part of ``rich.progress.Progress`` the library calls use, sent to the parent."""

    def __init__(self, link: Any) -> None:
        self.link = link
        self._ids = itertools.count()
        self._totals: dict[int, Any] = {}

    def add_task(self, description: str, total: Any = None, **kwargs: Any) -> int:
        task = next(self._ids)
        self._totals[task] = total
        self.link.send(("progress", ("add", task, description, total)))
        return task

    def advance(self, task: int, advance: float = 1) -> None:
        self.link.send(("progress", ("advance", task, advance)))

    def update(self, task: int, **kwargs: Any) -> None:
        if "total" in kwargs:
            self._totals[task] = kwargs["total"]
        keep = {k: v for k, v in kwargs.items()
                if k in ("description", "total", "completed", "advance")}
        self.link.send(("progress", ("update", task, keep)))

    def remove_task(self, task: int) -> None:
        self.link.send(("progress", ("remove", task)))

    @property
    def tasks(self) -> list:
        from types import SimpleNamespace

        return [SimpleNamespace(id=k, total=v) for k, v in self._totals.items()]


def _worker_main(threads: int, parent: int, conn: Any) -> None:
    import signal

    from actrec.worker_links import WorkerEnd

    die_with_parent()
    if os.getppid() != parent:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the workers on Ctrl-C
    import torch

    torch.set_num_threads(threads)
    apply_thread_limit(threads)
    from actrec.reproduce_units import run_unit

    link = WorkerEnd(conn)
    progress = _ForwardedProgress(link)
    while True:
        unit = link.recv()  # the parent knows what it sent here
        if unit is None:
            link.send(("exit", None))
            return
        link.send(("result", run_unit(unit, progress)))


def run_units(units: Sequence[dict[str, Any]], jobs: int = 1, progress: Any = None,
              on_result: Callable[[dict[str, Any]], None] | None = None,
              on_start: Callable[[dict[str, Any]], None] | None = None) -> dict[str, dict]:
    """Run every unit (``actrec.reproduce_units.run_unit``); returns the results by unit key.
    A unit starts once the units its ``needs`` names (keys among ``units``; others are not
    waited for) have finished; when one of them failed, it is not run and fails naming it.
    ``jobs`` 1 runs them here, one after another; more run in that many worker processes, one
    pool for all (a training starts while other splits' inputs are still being made).
    ``on_result`` is called with each result as it arrives, ``on_start`` with each unit as
    it starts (here, or handed to an idle worker process)."""
    from actrec.reproduce_units import run_unit

    results: dict[str, dict] = {}
    if not units:
        return results
    keys = {u["key"] for u in units}
    waiting = list(units)

    def record(result: dict[str, Any]) -> None:
        results[result["key"]] = result
        if on_result is not None:
            on_result(result)

    def take_ready() -> list[dict[str, Any]]:
        """The waiting units whose needs have finished (removed from ``waiting``); those with
        a failed need are recorded as failed, never run."""
        ready: list[dict[str, Any]] = []
        changed = True
        while changed:
            changed, still = False, []
            for unit in waiting:
                needs = [k for k in unit.get("needs", ()) if k in keys]
                bad = next((k for k in needs if results.get(k, {}).get("status") == "failed"),
                           None)
                if bad is not None:
                    record({"key": unit["key"], "status": "failed", "scores": [],
                            "elapsed_s": None, "error": f"not run: it needs {bad}, which "
                                                       f"failed ({results[bad]['error']})"})
                    changed = True
                elif all(k in results for k in needs):
                    ready.append(unit)
                else:
                    still.append(unit)
            waiting[:] = still
        return ready

    def never_ready() -> None:
        for unit in waiting:  # needs that cannot finish (a cycle): say so instead of hanging
            record({"key": unit["key"], "status": "failed", "scores": [], "elapsed_s": None,
                    "error": f"not run: its needs {unit.get('needs')} never finished"})
        waiting.clear()

    if jobs <= 1:
        while waiting:
            ready = take_ready()
            if not ready and waiting:
                never_ready()
            for unit in ready:
                if on_start is not None:
                    on_start(unit)
                record(run_unit(unit, progress))
        return results
    import multiprocessing

    from actrec.worker_links import ENDED, WorkerLinks

    ctx = multiprocessing.get_context("spawn")
    workers = min(jobs, len(units))
    threads = thread_share(workers)  # the processes that run share the cores, not --jobs
    links = WorkerLinks(ctx)
    ready: list[dict[str, Any]] = []
    procs: dict[int, Any] = {}
    holding: dict[int, str] = {}  # worker -> the unit sent to it (known before it starts it)

    def dispatch() -> None:
        """Give each idle live worker a ready unit."""
        ready.extend(take_ready())
        for w, proc in procs.items():
            if not ready:
                break
            if w not in holding and w not in gone and proc.is_alive():
                unit = ready[0]
                if not links.send(w, unit):  # it died: its pipe's end is read next
                    continue
                ready.pop(0)
                holding[w] = unit["key"]  # a worker dead before it reads it fails it too
                if on_start is not None:
                    on_start(unit)
        if waiting and not ready and not holding:
            never_ready()

    gone: set[int] = set()
    shown: dict[tuple[int, int], Any] = {}  # (worker, its task id) -> the parent's task id

    def start(worker: int) -> None:
        theirs = links.pipe(worker)
        with child_thread_env(threads):
            proc = ctx.Process(target=_worker_main, name=f"actrec-reproduce-{worker}",
                               args=(threads, os.getpid(), theirs), daemon=True)
            try:
                proc.start()
            finally:
                theirs.close()  # the worker's copy only: its pipe ends when it does
        procs[worker] = proc

    def forward(worker: int, event: tuple) -> None:
        if progress is None:
            return
        op, task = event[0], (worker, event[1])
        if op == "add":
            shown[task] = progress.add_task(f"[{worker}] {event[2]}", total=event[3])
        elif task in shown:
            if op == "advance":
                progress.advance(shown[task], event[2])
            elif op == "update":
                fields = dict(event[2])
                if "description" in fields:
                    fields["description"] = f"[{worker}] {fields['description']}"
                progress.update(shown[task], **fields)
            elif op == "remove":
                progress.remove_task(shown.pop(task))

    def drop_bars(worker: int) -> None:
        for task in [t for t in shown if t[0] == worker]:
            if progress is not None:
                progress.remove_task(shown.pop(task))

    def died(worker: int) -> None:
        """``worker``'s pipe ended before it said it would exit: it died (killed, out of
        memory); the unit it held fails, and a fresh worker takes its place."""
        proc = procs[worker]
        proc.join(timeout=30)
        if proc.is_alive():  # its pipe broke while it runs on: it can report nothing more
            proc.kill()
            proc.join()
        if worker in gone:
            return
        gone.add(worker)
        drop_bars(worker)
        key = holding.pop(worker, None)
        if key is not None:
            record({"key": key, "status": "failed", "scores": [], "elapsed_s": None,
                    "error": f"the worker process running it died (exit code "
                             f"{proc.exitcode}; killed, or out of memory?)"})
        if len(results) < len(units) and len(procs) > workers + len(units):
            for key in [u["key"] for u in ready + waiting]:
                record({"key": key, "status": "failed", "scores": [], "elapsed_s": None,
                        "error": "not run: every worker process started died (see the "
                                 "messages above)"})
            ready.clear()
            waiting.clear()
        elif len(results) < len(units):
            start(max(procs) + 1)
        dispatch()

    try:
        for w in range(workers):
            start(w)
        dispatch()
        while len(results) < len(units):
            for worker, message in links.receive(timeout=0.5):
                if message is ENDED:
                    died(worker)
                    continue
                kind, payload = message
                if kind == "progress":
                    forward(worker, payload)
                elif kind == "result":
                    holding.pop(worker, None)
                    drop_bars(worker)
                    record(payload)
                    dispatch()
                elif kind == "exit":
                    gone.add(worker)
        for w in procs:  # every unit is done: the workers may go
            if w not in gone:
                links.send(w, None)
    finally:
        for proc in procs.values():
            if proc.is_alive() and len(results) < len(units):
                proc.terminate()
        for proc in procs.values():
            proc.join(timeout=30)
        links.close()
    return results
