"""Handlers swapped for a block (``actrec.signal_handlers.handlers_swapped``: the checkpoint's
replace in ``runs._signals_deferred``, live recognition's ``_stop_requests``) are all put
back, even when a signal acted on while they are swapped or put back raises: a SIGTERM whose
handler raises (as extraction's does) landing once SIGINT's handler is swapped, or a Ctrl-C
landing once SIGINT's is back, left the other one swapped for the rest of the process (Ctrl-C
or SIGTERM collected and never acted on). The signal is made to land at that exact point with
``sys.settrace`` (the first line run in the swapping code in that state), in a fresh
interpreter; the probe looks at the handlers only, not at how the code is written."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent('''
    import signal, sys
    from actrec import live, runs

    class Term(Exception):
        pass

    def on_term(signum, frame):
        raise Term()

    BLOCK, WHERE, SEND = sys.argv[1], sys.argv[2], getattr(signal, sys.argv[3])
    TERM = signal.SIG_DFL if BLOCK == "live" else on_term  # live swaps only the defaults
    signal.signal(signal.SIGTERM, TERM)
    FRAMES = {"handlers_swapped", "_signals_deferred", "_stop_requests"}
    state = {"after": False, "sent": False}

    def local(frame, event, arg):
        if event != "line" or state["sent"]:
            return local
        int_swapped = signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        term_swapped = signal.getsignal(signal.SIGTERM) is not TERM
        if (WHERE == "install" and not state["after"] and int_swapped and not term_swapped) \\
                or (WHERE == "restore" and state["after"] and not int_swapped
                    and term_swapped):
            state["sent"] = True
            signal.raise_signal(SEND)  # lands between the two swaps
        return local

    sys.settrace(lambda frame, event, arg:
                 local if frame.f_code.co_name in FRAMES else None)
    block = runs._signals_deferred() if BLOCK == "runs" else live._stop_requests()
    try:
        with block:
            state["after"] = True
    except (Term, KeyboardInterrupt) as exc:
        print("raised", type(exc).__name__)
    sys.settrace(None)
    print("sent", state["sent"])
    print("SIGINT", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    print("SIGTERM", signal.getsignal(signal.SIGTERM) is TERM)
''')


def _probe(block: str, where: str, send: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, block, where, send],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_sigterm_raising_while_the_handlers_are_swapped_leaves_ctrl_c_working():
    assert _probe("runs", "install", "SIGTERM") == [
        "raised Term", "sent True", "SIGINT True", "SIGTERM True"]


def test_a_ctrl_c_while_the_handlers_are_put_back_leaves_sigterm_working():
    assert _probe("runs", "restore", "SIGINT") == [
        "raised KeyboardInterrupt", "sent True", "SIGINT True", "SIGTERM True"]


def test_live_stop_requests_put_sigterm_back_after_a_ctrl_c_there_too():
    assert _probe("live", "restore", "SIGINT") == [
        "raised KeyboardInterrupt", "sent True", "SIGINT True", "SIGTERM True"]
