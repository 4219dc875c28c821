"""The recorder core (plain Python): queue, writer thread, loss accounting, taps."""
