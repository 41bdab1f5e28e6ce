"""The AML engine: pure ML (schemas, data rearrangement, CSV reading, statistics, recipes, SGD learners,
metrics, batch output). Imports numpy, pandas, pyarrow, scipy and scikit-learn only — never HTTP,
Prefect, boto3 or storage. See docs/architecture.md for the contract.

Modules: ``schema``, ``rearrange``, ``table`` (the encoded-table format and the :class:`Table` protocol
every reader of a table takes), ``dataset`` (the CSV reader, ``build_dataset``), ``stats``, ``recipe`` (a
package: parser, transforms, features, suggest), ``params``, ``model``, ``evaluation``, ``batch``,
``errors``, ``limits`` (AML's limits, the token caps and the job memory budget, with the checks the service
calls: ``check_record``, ``require_records``).
"""
