"""The ML Commons REST API served by `mlbatch serve-api`."""
