"""One session directory: writer, the one index builder and read view, counters, events."""
