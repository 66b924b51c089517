"""``python -m openai_batches.emulator [--host 127.0.0.1] [--port 8765]``: serve until Ctrl-C."""

from .cli import main

if __name__ == "__main__":
    main()
