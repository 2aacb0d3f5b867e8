"""The ``fakefacegen`` subcommands, one module each.

Every module here has ``register(subparsers) -> parser`` (the flags, with ``set_defaults(func=run)``)
and ``run(args) -> exit code``. Flags that several commands share come from :mod:`.flags`. The
work is imported inside ``run`` (torch, the web stack), so ``fakefacegen --help`` stays fast.
``cli.COMMANDS`` lists the modules in the order ``--help`` shows them.
"""


class UsageError(ValueError):
    """Flags that cannot go together; ``fakefacegen`` prints the message as one line and exits with 2."""
