"""The OpenAI-compatible HTTP surface: request models, error mapping, response shaping."""
