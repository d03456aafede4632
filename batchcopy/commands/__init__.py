"""One module per command: each wires the stages for its command; none holds logic
another command imports."""
