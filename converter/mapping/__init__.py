"""The declarative mapping engine: mapping files, terminology tables, compiled rules, provenance."""
