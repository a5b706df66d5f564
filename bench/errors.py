"""Errors the CLI reports to the user with exit status 2 (bad input), before anything runs."""

import re


class ConfigError(ValueError):
    """Bad user input: the message names the file/field and the valid choices."""


def clip(text: str, limit: int = 200) -> str:
    """`text` shortened to about `limit` characters (its middle elided), for echoing user input:
    a 10 MB name in an error message would bury the message."""
    if len(text) <= limit:
        return text
    half = max(limit // 2 - 10, 1)
    return f"{text[:half]}...[{len(text) - 2 * half} characters]...{text[-half:]}"


def clip_words(message: str, limit: int = 400) -> str:
    """`message` with every run of more than `limit` non-blank characters clipped (see `clip`)."""
    return re.sub(rf"\S{{{limit + 1},}}", lambda m: clip(m.group(), limit), message)
