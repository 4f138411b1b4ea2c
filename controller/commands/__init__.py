"""One module per ``kgw`` subcommand, each with ``run(args, env) -> ExitStatus``."""
