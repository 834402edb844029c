"""Local fake servers speaking the OpenAI and Anthropic wire formats, for tests of the real SDKs."""
