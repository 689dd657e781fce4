"""The agent: runs on the instance, depends only on mlbatch.core."""
