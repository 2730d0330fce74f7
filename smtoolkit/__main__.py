"""`python -m smtoolkit` is the `smtoolkit` command."""

from .cli import main

raise SystemExit(main())
