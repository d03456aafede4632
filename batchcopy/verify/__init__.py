"""Checking that done rows' destinations hold what the rows asked for."""
