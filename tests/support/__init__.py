"""Test support: fakes of the cloud edge and emulator fixtures. Never imported by mlbatch."""
