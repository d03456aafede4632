"""The ledger of rows and calls (SQLite, crash safe), and the machine-wide holds on
image sets."""
