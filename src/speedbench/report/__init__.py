"""Reports: console tables (rich) built from summaries."""
