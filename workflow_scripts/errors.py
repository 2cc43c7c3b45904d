"""Exceptions with messages meant for the person running the pipeline (one clear line each)."""


class PipelineError(Exception):
    """Base class: the message says what is wrong and, where possible, what to do."""


class ConfigError(PipelineError):
    """The configuration is invalid (unknown key, wrong type, impossible value, unknown band)."""


class BoundaryError(PipelineError):
    """A data-boundary file (mosaic, rms map, catalogue) is missing, unreadable or malformed."""


class DownloadError(PipelineError):
    """A download failed for good (offline, HTTP error, verification failure after retries)."""


class StudyError(PipelineError):
    """A study cannot go on with these inputs (too few galaxies, a missing PSF, ...)."""
