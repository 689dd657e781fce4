"""mlbatch: release and run machine-learning batch jobs on Google Cloud (or one machine)."""

__version__ = "0.1.0"
