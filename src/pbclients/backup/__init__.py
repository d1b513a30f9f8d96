"""Backups: one verified ZIP archive per client, written before anything is deleted.

- `archive`: the format (member names, manifest, rows as JSON and back, limits);
- `writer`: writing an archive safely, and `write_verified_backup`, which reads it
  back and checks it against the database before anyone relies on it;
- `reader`: opening an untrusted archive with bounded reads, and verifying it.

The use cases built on them are `pbclients.exporting`, `pbclients.deletion` and
`pbclients.restore`.
"""
