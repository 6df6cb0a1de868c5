"""The one exception type for bad user input.

Library code raises :class:`PDNError` with a single line that names the file, row or argument
at fault. The CLI turns it into ``pdn: error: <message>`` on stderr and exit code 2, with no
traceback. Programming errors are left as ordinary exceptions.
"""

from __future__ import annotations

#: Longest error message, in characters: longer ones are cut (the file and row come first).
MAX_MESSAGE_CHARS = 300


class PDNError(Exception):
    """Bad input from the user (file, row, argument). The message is one line."""

    def __init__(self, message: str) -> None:
        # Keep the contract: one line, whatever the caller formatted.
        super().__init__(one_line(message))


def one_line(message: object) -> str:
    """``message`` on one line of at most :data:`MAX_MESSAGE_CHARS` characters (see :class:`PDNError`)."""
    return _shorten(" ".join(str(message).split()))


def _shorten(text: str) -> str:
    """Fit ``text`` in :data:`MAX_MESSAGE_CHARS`: long words (paths, lists) lose their middle first,
    then the message does, so the file named at the start and the remedy at the end both stay."""
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    words = [w if len(w) <= 60 else f"{w[:24]}...{w[-33:]}" for w in text.split(" ")]
    text = " ".join(words)
    if len(text) > MAX_MESSAGE_CHARS:
        head = MAX_MESSAGE_CHARS * 2 // 3
        text = f"{text[:head]} ... {text[-(MAX_MESSAGE_CHARS - head - 5):]}"
    return text
