"""The SQL defect log: typed models, sessions, queries, the batching writer, migrations."""
