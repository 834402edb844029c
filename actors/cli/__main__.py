"""``python -m actors.cli``: the ``agentq`` command."""

from actors.cli.commands import main

raise SystemExit(main())
