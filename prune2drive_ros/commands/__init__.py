"""The ``prune2drive`` command and its subcommands: they parse flags, call the library, print.

Nothing outside this package imports it (the library never prints); :mod:`.cli` imports a
subcommand's module only when that subcommand runs, so ``--help`` stays fast.
"""
