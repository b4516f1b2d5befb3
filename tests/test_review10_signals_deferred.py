"""``runs._signals_deferred`` (around a checkpoint's replace and the trainer's record of it)
swaps the SIGINT and SIGTERM handlers for a collector and puts them back. A signal acted on
while it swaps or restores them (a SIGTERM whose handler raises, as extraction's does,
landing after SIGINT's handler was swapped; a Ctrl-C landing after SIGINT's was restored)
must not leave the other one swapped: Ctrl-C or SIGTERM would then be collected for the rest
of the process and never acted on. The signal is made to land at that exact point with
``sys.settrace`` (a line event of the swap), in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent('''
    import signal, sys
    from actrec import runs

    class Term(Exception):
        pass

    def on_term(signum, frame):
        raise Term()

    signal.signal(signal.SIGTERM, on_term)
    WHERE, SEND = sys.argv[1], getattr(signal, sys.argv[2])

    def local(frame, event, arg):
        f = frame.f_locals
        if event != "line" or f.get("signum") != signal.SIGTERM:
            return local
        installing = WHERE == "install" and signal.SIGINT in f.get("saved", {}) and \\
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        restoring = WHERE == "restore" and \\
            signal.getsignal(signal.SIGINT) is signal.default_int_handler and \\
            signal.getsignal(signal.SIGTERM) is not on_term
        if installing or restoring:
            sys.settrace(None)
            frame.f_trace = None
            signal.raise_signal(SEND)  # lands between the two swaps
        return local

    sys.settrace(lambda frame, event, arg:
                 local if frame.f_code.co_name == "_signals_deferred" else None)
    try:
        with runs._signals_deferred():
            pass
    except (Term, KeyboardInterrupt) as exc:
        print("raised", type(exc).__name__)
    sys.settrace(None)
    print("SIGINT", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    print("SIGTERM", signal.getsignal(signal.SIGTERM) is on_term)
''')


def _probe(where: str, send: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, where, send], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_sigterm_raising_while_the_handlers_are_swapped_leaves_ctrl_c_working():
    assert _probe("install", "SIGTERM") == ["raised Term", "SIGINT True", "SIGTERM True"]


def test_a_ctrl_c_while_the_handlers_are_restored_leaves_sigterm_working():
    assert _probe("restore", "SIGINT") == ["raised KeyboardInterrupt", "SIGINT True",
                                            "SIGTERM True"]
