"""The ``.tts`` textual form (see DESIGN.md §5); the front end lands with its own issue."""
