"""Baseline pruners, one module each, registered like gRDA. Importing this package imports them."""
