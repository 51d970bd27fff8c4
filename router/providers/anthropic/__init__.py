"""The Anthropic provider: the Messages and Message Batches APIs through the `anthropic` SDK
(`provider.AnthropicProvider`), and the rules of its call surface (`limits`, `cache_rules`).

Nothing is imported here, so that router/params.py can import `cache_rules` without
importing the provider, which itself imports router.params."""
