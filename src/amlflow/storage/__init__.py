"""amlflow.storage — see docs/architecture.md."""
