"""The `callwise` command line: demo, transcribe, serve, models, and the dialogue commands."""
