"""What the operator sees and sends: log lines (text or JSON), the progress bar and stats
lines, stop signals."""
