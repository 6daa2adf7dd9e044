"""The application on top of ppl: the ``tts`` command, evaluation, metrics and the model registry."""
