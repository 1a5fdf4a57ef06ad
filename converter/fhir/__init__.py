"""FHIR: turning mapped resources into bundles (ids, identifiers, references, transaction requests)."""
