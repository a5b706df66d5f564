"""Errors the CLI reports to the user with exit status 2 (bad input), before anything runs."""


class ConfigError(ValueError):
    """Bad user input: the message names the file/field and the valid choices."""
