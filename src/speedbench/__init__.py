"""speedbench: benchmark speculative decoding (SD) in LLM serving engines.

Importing this package pulls in no engine library (torch, transformers, vllm, ...):
engines are resolved lazily through :mod:`speedbench.engines.registry`.
"""

__version__ = "0.1.0"
