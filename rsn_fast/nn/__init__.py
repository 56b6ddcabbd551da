"""Drop-in modules that other pose codebases can import without our trainer."""
