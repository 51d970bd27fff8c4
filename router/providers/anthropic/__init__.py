"""The Anthropic provider: the Messages and Message Batches APIs through the `anthropic` SDK
(`provider.AnthropicProvider`), its SDK client (`client`), the Router's drop-in surface
(`dropin`: `client.messages`, `client.models`, `client.beta`, `client.results`) and the
rules of its call surface (`params`, `create_params`, `limits`, `cache_rules`).

Nothing is imported here, so that a module that needs one part (router/bulk.py the keyword
checks of `params`) does not import the others (`dropin`, which itself imports router/bulk.py)."""
