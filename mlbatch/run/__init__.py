"""The run flow's controller: validate, create, stream, wait, retry, clean up, exit code."""
