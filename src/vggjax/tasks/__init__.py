"""What a subcommand does, as a library call: evaluate a run, predict image files."""
