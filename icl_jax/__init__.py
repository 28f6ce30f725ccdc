"""icl_jax: meta-train black-box sequence models into general-purpose in-context learners."""

__version__ = "0.1.0"
