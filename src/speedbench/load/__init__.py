"""The load: requests built, sent and timed (generator), open-loop arrivals, per-request seeds, and the drivers that
send a run's load (drivers/: this process's event loop, client processes, Ray actors)."""
