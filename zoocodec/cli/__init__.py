"""The command line (`zoocodec`, console script zoocodec.cli:main): commands.py holds the typer app
and one function per verb, options.py the shared options and the parsing of user values,
render.py what is printed (tables, summary lines, progress and notes on stderr)."""
from zoocodec.cli.commands import app, main

__all__ = ["app", "main"]
