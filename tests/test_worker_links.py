"""Each worker process's own pipe to its parent (``actrec.worker_links``): a worker that dies
in the middle of a message ends only its own pipe, after the messages it sent before; the
others go on talking both ways. Extraction workers end on their own once the work is done,
and a video meant for a worker that died after asking for it goes to another. Real spawned
processes, real pipes, a real store."""

from __future__ import annotations

import multiprocessing
import os
import struct
import time

from test_left2_setup_store import Grey

from actrec.extract import extract_features
from actrec.worker_links import ENDED, WorkerEnd, WorkerLinks


def _dies_mid_message(conn) -> None:
    link = WorkerEnd(conn)
    link.send(("hello", 0))
    # a 1000-byte message of which 9 bytes were written when the process was killed
    os.write(conn.fileno(), struct.pack("!i", 1000) + b"cut short")
    os._exit(3)


def _waits_then_talks(conn) -> None:
    link = WorkerEnd(conn)
    link.send(("ready", 1))
    link.send(("got", link.recv()))


def _collect(links: WorkerLinks, until) -> dict[int, list]:
    """The messages received until ``until(seen)``."""
    seen: dict[int, list] = {0: [], 1: []}
    deadline = time.monotonic() + 60
    while not until(seen):
        assert time.monotonic() < deadline, f"still waiting, after {seen}"
        for worker, message in links.receive(timeout=5):
            seen[worker].append(message)
    return seen


def test_a_worker_dying_mid_message_ends_only_its_own_pipe():
    ctx = multiprocessing.get_context("spawn")
    links = WorkerLinks(ctx)
    procs = []
    for worker, target in enumerate((_dies_mid_message, _waits_then_talks)):
        theirs = links.pipe(worker)
        proc = ctx.Process(target=target, args=(theirs,), daemon=True)
        proc.start()
        theirs.close()
        procs.append(proc)
    try:
        seen = _collect(links, lambda seen: ENDED in seen[0] and seen[1])
        assert seen == {0: [("hello", 0), ENDED], 1: [("ready", 1)]}
        assert not links.send(0, "anyone?")  # its pipe is closed here
        # the other worker hears the parent and is heard after the death
        assert links.send(1, "go")
        seen = _collect(links, lambda seen: ENDED in seen[1])
        assert seen == {0: [], 1: [("got", "go"), ENDED]}
        assert links.receive(timeout=0.1) == [] and links.drain() == []
    finally:
        links.close()
        for proc in procs:
            proc.join(timeout=30)
    assert [p.exitcode for p in procs] == [3, 0]


if os.environ.get("ACTREC_TEST_SLOW_ASK"):  # in the workers: ask for videos a moment late
    _send = WorkerEnd.send

    def _send_late(self, message):
        if message[0] == "next":
            time.sleep(0.3)
        _send(self, message)

    WorkerEnd.send = _send_late


if os.environ.get("ACTREC_TEST_DIE_AFTER_ASKS"):  # in the workers: die right after asking
    _asked = []
    _send_now = WorkerEnd.send

    def _send_then_die(self, message):
        _send_now(self, message)
        if message[0] == "next":
            _asked.append(message)
            if len(_asked) == int(os.environ["ACTREC_TEST_DIE_AFTER_ASKS"]):
                os._exit(3)

    WorkerEnd.send = _send_then_die


class MeanGrey(Grey):
    """Per-frame mean grey level, defined here so that the workers unpickling it import this
    module, and with it the hooks above."""

    name = "meangrey"


class MarksItsExit(MeanGrey):
    """Per-frame mean; each process that sets it up writes a file named by its pid when it
    exits normally (not when it is killed)."""

    name = "marksexit"

    def setup(self, runtime) -> None:
        import atexit
        from pathlib import Path

        mark = Path(os.environ["ACTREC_TEST_EXIT_MARKS"]) / str(os.getpid())
        atexit.register(mark.touch)


def test_extraction_workers_end_on_their_own_when_the_videos_are_done(tiny_kitchen, tmp_path,
                                                                      monkeypatch):
    # A worker asks for its next video after its last one is reported: the parent, done by
    # then, still answers (no more), instead of leaving it waiting until it is killed.
    _, index = tiny_kitchen
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("ACTREC_TEST_EXIT_MARKS", str(marks))
    monkeypatch.setenv("ACTREC_TEST_SLOW_ASK", "1")
    report = extract_features(index, MarksItsExit(), tmp_path / "s.zarr", dataset_ref="r",
                              workers=2, batch_size=8)
    assert report.ok and sorted(report.written) == sorted(index.videos)
    assert len(list(marks.iterdir())) == 2


def test_a_video_handed_to_a_worker_that_died_after_asking_goes_to_another(tiny_kitchen,
                                                                            tmp_path,
                                                                            monkeypatch):
    # Each worker dies right after asking for its second video, while the parent is still
    # busy with the first one's report: the video it would be handed was received by no
    # process and must not be failed as "died" with it; a fresh worker extracts it.
    from actrec import extract_status

    _, index = tiny_kitchen
    monkeypatch.setenv("ACTREC_TEST_DIE_AFTER_ASKS", "2")
    clear_failure, late = extract_status.clear_failure, [0.5]

    def clear_failure_late(*args, **kwargs):
        if late:
            time.sleep(late.pop())
        return clear_failure(*args, **kwargs)

    monkeypatch.setattr(extract_status, "clear_failure", clear_failure_late)
    report = extract_features(index, MeanGrey(), tmp_path / "s.zarr", dataset_ref="r",
                              workers=2, batch_size=8)
    assert not report.failed, report.failed
    assert report.ok and sorted(report.written) == sorted(index.videos)


def _ignores_sigterm() -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a worker stuck in a long call
    time.sleep(600)


def test_a_second_ctrl_c_while_workers_are_told_to_stop_still_ends_every_worker():
    # The stop's first steps (telling the workers no task is left, SIGTERM) were outside its
    # guard: an interrupt there left a worker ignoring SIGTERM running (and the exit waiting)
    from actrec.extract_workers import _stop_workers

    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_ignores_sigterm, daemon=True)
    proc.start()

    def interrupted() -> None:
        raise KeyboardInterrupt

    again = _stop_workers({0: proc}, [proc], first=interrupted)
    assert isinstance(again, KeyboardInterrupt)  # for the caller to raise, once cleaned up
    assert not proc.is_alive() and proc.exitcode == -9  # killed
