"""The OpenAI side of the emulator: chat completions, files and the Batch API.

It shares the Anthropic side's clock, journal, fault injection, seed and
`EmulatorConfig` (turnaround, outcome rates), and keeps state of its own in
`emu.openai` (an `OpenAIState`). Routes are registered by `routes.add_routes`.
"""
