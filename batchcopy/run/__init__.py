"""One run: settle what earlier runs left open, dispatch units on a task group, drive
each call (precheck, send, wait, reconcile) to its outcome."""
