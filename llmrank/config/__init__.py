"""Configuration: a generic YAML loader (:mod:`llmrank.config.loader`: ``${VAR}``, ``--set``, ``FILE:LINE``
errors, knowing nothing of llmrank) under the recipe schema (:mod:`llmrank.recipe`)."""
