"""Test support: emulators and fakes. Never imported by product code."""
