"""The practice's records as HL7 FHIR, out (export, backups) and in (intake of Patients).

FHIR R4B (4.3.0), kept to elements that exist unchanged in R4 (4.0.1), so both the
servers that speak R4B and the many EHRs that accept only R4 read what we write (see the
README section "FHIR" for the mapping table and the reasons).

- `mapping`: one record (a row, as a mapping) -> one FHIR resource (a plain dict);
- `bulk`: NDJSON lines and the Bulk Data output manifest;
- `intake`: Patient resources, NDJSON files and Bundles -> clients to add.

Resources are plain dicts written with the stdlib `json` module: no FHIR library is
imported here, so the CLI stays fast; the tests validate every resource with one.
"""

from __future__ import annotations

FHIR_VERSION = "4.3.0"
FHIR_RELEASE = "R4B"

# Our identifier systems: `urn:pbclients:<record>-id`, value = the record's id. The ids are
# this practice database's own; they let a receiving system find the record again.
CLIENT_ID_SYSTEM = "urn:pbclients:client-id"
