"""Run directories: manifest.json, records.jsonl (appended as requests finish), summary files."""
