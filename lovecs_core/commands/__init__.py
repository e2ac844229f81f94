"""`lovecs` subcommands: each module exposes ``register(subparsers)`` adding one subcommand whose
handler is ``run(args, reporter) -> int``."""
