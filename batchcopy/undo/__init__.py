"""Taking a manifest's runs back: the plan (pure), its actions in the journal,
applying them, its report."""
