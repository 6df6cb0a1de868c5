"""The one exception type for bad user input.

Library code raises :class:`PDNError` with a single line that names the file, row or argument
at fault. The CLI turns it into ``pdn: error: <message>`` on stderr and exit code 2, with no
traceback. Programming errors are left as ordinary exceptions.
"""

from __future__ import annotations


class PDNError(Exception):
    """Bad input from the user (file, row, argument). The message is one line."""

    def __init__(self, message: str) -> None:
        # Keep the contract: one line, whatever the caller formatted.
        super().__init__(" ".join(str(message).split()))
