"""amlflow.service — see docs/architecture.md."""
