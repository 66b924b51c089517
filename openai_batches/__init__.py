"""openai_batches: OpenAI's Batch API as a reusable Django app.

Import-light on purpose: only the version lives here, so ``import openai_batches`` never
touches Django settings or the network.
"""

__version__ = "0.2.0"
