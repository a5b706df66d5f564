"""Baseline pruners, one module each, registered like gRDA. Importing this package imports them."""

from baselines import channel, gmp, magnitude, random, str, vd  # noqa: F401  (register)
