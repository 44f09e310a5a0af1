"""Raw data sources, the shipped sample data, and scenario preparation."""
