"""The AML engine: pure ML (schemas, data rearrangement, CSV reading, statistics, recipes, SGD learners,
metrics, batch output). Imports numpy, pandas, pyarrow, scipy and scikit-learn only — never HTTP,
Prefect, boto3 or storage. See docs/architecture.md for the contract."""
