"""User-facing errors.

Anything the user can fix (a missing file, a malformed record, an unknown metric or model name) raises
:class:`LlmrankError` with a message that names the file, key or record and what was expected. The CLI
prints it as one line and exits with status 2, without a traceback.
"""


class LlmrankError(Exception):
    """An error caused by the user's input, reported as one line by the CLI."""
