"""``python -m actrec`` is the ``actrec`` command.

``python -m`` puts the current folder first on ``sys.path``; the console script does not.
Drop it, so that a ``*.dist-info`` or a module lying in the current folder is never imported
as a plugin by one entry point and ignored by the other.
"""

import os
import sys

if sys.path and sys.path[0] in ("", os.getcwd()) and not sys.flags.safe_path:
    del sys.path[0]

from actrec.cli import main  # noqa: E402  (after the path fix, so discovery sees the same path)

main()
