"""SDTM: turning mapped rows into SDTMIG 3.4 domains."""
