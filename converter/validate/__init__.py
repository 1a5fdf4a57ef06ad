"""Validators for case reports, FHIR output and SDTM output; one issue model for all of them."""
