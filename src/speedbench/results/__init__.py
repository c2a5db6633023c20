"""What speedbench writes and reads back: run directories (manifest.json, records.jsonl appended as requests finish,
summary files), sweep.json, the figures a report draws (estimates, comparisons, sweep figures) and the files made
of them: the sweep CSVs, model.json and the HTML pages are written here, as the summaries are."""
