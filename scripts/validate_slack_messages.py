"""Validates Slack messages with the official slack_sdk block models (the test peer for Block Kit payloads).

Usage: validate_slack_messages.py FILE.json
FILE holds a JSON array of messages as Snowpatrol sends them to chat.postMessage ({"text": ..., "blocks": [...]}).
Every block is parsed by slack_sdk's Block.parse_all and serialised with to_dict(), which runs slack_sdk's own
validators (header <= 150 characters, section text <= 3,000, fields <= 10 of <= 2,000, ...). The message-level
limits slack_sdk does not model are checked here: at most 50 blocks per message, a non-empty fallback text.
Prints one line per problem and exits 1 if there is any; else prints "N messages valid" and exits 0.
"""

import json
import sys

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

MAX_BLOCKS = 50  # https://api.slack.com/reference/block-kit/blocks
MAX_TEXT = 40000  # chat.postMessage `text`


def problems(i, message):
    blocks = message.get("blocks") or []
    text = message.get("text") or ""
    if not text.strip():
        yield f"message {i}: empty fallback text"
    if len(text) > MAX_TEXT:
        yield f"message {i}: text of {len(text)} characters"
    if len(blocks) > MAX_BLOCKS:
        yield f"message {i}: {len(blocks)} blocks (at most {MAX_BLOCKS})"
    parsed = Block.parse_all(blocks)
    for j, (raw, block) in enumerate(zip(blocks, parsed)):
        if block is None:
            yield f"message {i} block {j}: slack_sdk does not know {raw.get('type')!r}"
            continue
        try:
            again = block.to_dict()
        except SlackObjectFormationError as e:
            yield f"message {i} block {j} ({raw.get('type')}): {e}"
            continue
        if again.get("type") != raw.get("type"):
            yield f"message {i} block {j}: parsed as {again.get('type')!r}, sent as {raw.get('type')!r}"


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        messages = json.load(f)
    found = [p for i, m in enumerate(messages) for p in problems(i, m)]
    for p in found:
        print(p)
    if found:
        sys.exit(1)
    print(f"{len(messages)} messages valid")


if __name__ == "__main__":
    main()
