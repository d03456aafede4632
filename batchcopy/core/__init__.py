"""Records and rules shared by every stage: the manifest row (CopySpec), the request
(CopyRequest), statuses, call states, durations."""
