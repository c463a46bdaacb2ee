"""CLI subcommands, one module each. A module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; adding a command is a new module plus its name in :data:`COMMANDS`."""

COMMANDS = ["retrieve", "evaluate", "rerank", "teach", "fuse", "distill", "refine", "run", "export", "serve", "models",
            "compare", "plan", "generate_queries", "judge"]
