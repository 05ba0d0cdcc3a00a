"""Cloud price tables, cloud-token counting, and cost/savings math.

Pure functions and frozen dataclasses, `Decimal` money, no network. Nothing here imports
`gateway` or `adapters` (dependencies point the other way), nor litellm: its price JSON is read as
plain data. Modules: `tables` (parsed price tables), `overrides`, `store` (versioned snapshots),
`tokens` (tiktoken counting), `cost` (cloud bill), `local` (local box cost), `receipt`, `money`.
"""
