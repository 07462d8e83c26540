"""``python -m jaxgauss`` is the ``jaxgauss`` command."""

from jaxgauss.cli import main

raise SystemExit(main())
