"""Request texts and bodies for the scenarios: short English inputs of the kinds the specialists see."""

from __future__ import annotations

__all__ = ["TEXTS", "chat_body", "classify_bodies", "escalating_body"]

TEXTS: tuple[str, ...] = (
    "an utterly charming and hilarious film that reminded me why I love the movies",
    "the plot is a mess and the acting is wooden from start to finish",
    "a gorgeous, witty, seductive movie",
    "it's a lot less fun than it thinks it is, and far too long",
    "one of the most moving stories of the year, beautifully shot",
    "I want to cancel my card because it was stolen yesterday",
    "how do I change the PIN on my debit card?",
    "what is the capital city of Australia?",
    "WINNER!! You have been selected for a free cruise, reply YES to claim now",
    "can you summarise this article about interest rates in two sentences",
    "hey, are we still on for lunch tomorrow at noon?",
    "why was I charged twice for the same transaction last week",
    "the soundtrack alone is worth the price of admission",
    "dull, predictable and painfully unfunny",
    "please write a short poem about autumn leaves",
    "my transfer to another account has been pending for three days",
)


def classify_bodies(task: str) -> list[dict[str, object]]:
    return [{"task": task, "input": t} for t in TEXTS]


def escalating_body(task: str) -> dict[str, object]:
    """A classify body the fake upstream answers with a known label (escalated, then cached)."""
    return {"task": task, "input": "a film I have mixed feelings about [[label:positive]]"}


def chat_body(model: str, content: str = "hello, please answer briefly") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": content}]}
