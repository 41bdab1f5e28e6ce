"""amlflow.server — see docs/architecture.md."""
