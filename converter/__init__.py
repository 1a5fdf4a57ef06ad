"""CaseBridge: structured oncology case reports to HL7 FHIR (mCODE) and CDISC SDTM."""

__version__ = "0.1.0"
