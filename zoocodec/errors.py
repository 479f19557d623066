"""Errors a user can cause. The CLI prints them as one line and exits with status 2."""


class ZoocodecError(Exception):
    """Base of every error caused by bad input (files, specs, options)."""


class ContainerError(ZoocodecError):
    """A .zc file is damaged, truncated, or not a zoocodec container."""


class ModelFormatError(ZoocodecError):
    """A model file is missing or in no format zoocodec reads."""


class SpecError(ZoocodecError):
    """An unknown method, coder or parameter, or a bad override pattern."""


class NonFiniteError(ZoocodecError):
    """A tensor holds NaN or Inf and lossy coding was asked for."""
