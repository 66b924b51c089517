"""stub"""

from .openai import OpenAIFlavor


class AnthropicFlavor(OpenAIFlavor):
    name = "anthropic"
