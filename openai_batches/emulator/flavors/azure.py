"""stub"""

from .openai import OpenAIFlavor


class AzureFlavor(OpenAIFlavor):
    name = "azure"
