"""Building datasets (``speedbench data fetch``, ``build``, ``select``, ``audit``, ``build-throughput``,
``synthetic``): SPEED-Bench's fetch with its resolvers, pools, diversity selection and audit, the throughput
and synthetic splits, tokenizers and writers.

Reading a dataset to run it needs none of this (:mod:`speedbench.data.readers`); modules here may import
the reading side, never the other way round.  Nothing is imported here, so importing one builder loads
only what it needs.
"""
