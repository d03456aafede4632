"""Talking to AWS: the shared HealthImaging client and its light request path, pacing
(token buckets + AIMD), error classification, preflight checks, s3:// storage."""
