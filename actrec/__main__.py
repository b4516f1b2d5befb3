"""``python -m actrec`` is the ``actrec`` command."""

from actrec.cli import main

main()
