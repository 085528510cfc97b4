"""sessionizer: final sessions and rolling summaries from a raw gaming event stream, for Xtremepush."""

__version__ = "0.1.0"
