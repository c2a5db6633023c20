"""Reports: what the commands show, drawn from typed results and never computed here: console tables (rich) of
runs, comparisons, sweeps, the fitted model and datasets, and self-contained HTML pages with their figures."""
