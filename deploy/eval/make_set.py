"""Generate the shipped labelled prompt set ``cpu-labelled.jsonl`` (deterministic; run by hand).

Short, closed-form prompts of graded difficulty across a dozen tasks, written for models of
100-300M parameters: arithmetic, comparisons, sequences, letters, calendar order, capitals,
antonyms, plurals, yes/no facts. Answers are checked by ``serve/evaluation/scorer.py``. The facts are
hand-written here; the numbers come from a seeded generator.

    python deploy/eval/make_set.py   # rewrites deploy/eval/cpu-labelled.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "cpu-labelled.jsonl"
NUM = " Answer with just the number."
WORD = " Answer with one word."
YN = " Answer yes or no."

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo", "England": "London", "Greece": "Athens",
    "Portugal": "Lisbon", "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Austria": "Vienna", "Poland": "Warsaw", "Hungary": "Budapest", "Canada": "Ottawa", "Australia": "Canberra",
    "Kenya": "Nairobi", "Peru": "Lima", "Chile": "Santiago", "Argentina": "Buenos Aires", "Cuba": "Havana",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "South Korea": "Seoul", "Iran": "Tehran", "Turkey": "Ankara",
}
ANTONYMS = {
    "hot": ["cold"], "big": ["small", "little"], "up": ["down"], "happy": ["sad", "unhappy"],
    "fast": ["slow"], "day": ["night"], "open": ["closed", "close", "shut"], "light": ["dark", "heavy"],
    "wet": ["dry"], "old": ["new", "young"], "early": ["late"], "full": ["empty"], "win": ["lose"],
    "push": ["pull"], "rich": ["poor"], "strong": ["weak"], "hard": ["soft", "easy"], "above": ["below", "under"],
    "begin": ["end", "finish"], "tall": ["short"], "inside": ["outside"], "left": ["right"], "thick": ["thin"],
    "buy": ["sell"], "true": ["false"],
}
PLURALS = {
    "cat": "cats", "child": "children", "mouse": "mice", "box": "boxes", "city": "cities", "man": "men",
    "tooth": "teeth", "foot": "feet", "leaf": "leaves", "wolf": "wolves", "goose": "geese", "bus": "buses",
    "baby": "babies", "person": "people", "knife": "knives", "dog": "dogs", "woman": "women", "fish": "fish",
}
FACTS = [
    ("Is the sun a star?", "yes"), ("Can fish breathe underwater?", "yes"),
    ("Is ice colder than boiling water?", "yes"), ("Do cats have four legs?", "yes"), ("Is Paris in France?", "yes"),
    ("Is the Pacific an ocean?", "yes"), ("Is 10 greater than 3?", "yes"), ("Do birds have feathers?", "yes"),
    ("Is a tomato a fruit?", "yes"), ("Is the Earth flat?", "no"), ("Is the moon made of cheese?", "no"),
    ("Can a dog fly without help?", "no"), ("Is 2 greater than 9?", "no"), ("Is snow hot?", "no"),
    ("Do snakes have legs?", "no"), ("Is Tokyo in Brazil?", "no"), ("Is a whale a fish?", "no"),
    ("Is the sun cold?", "no"), ("Does a week have ten days?", "no"), ("Is gold a metal?", "yes"),
    ("Do humans need oxygen to live?", "yes"), ("Is a spider an insect?", "no"), ("Is 7 an even number?", "no"),
    ("Is 12 an even number?", "yes"), ("Does a triangle have four sides?", "no"), ("Is a square a shape?", "yes"),
    ("Is the sky usually blue on a clear day?", "yes"), ("Do plants need light to grow?", "yes"),
    ("Is Mount Everest under the sea?", "no"),
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WORDS = ["apple", "banana", "river", "garden", "pencil", "window", "orange", "planet", "school", "yellow",
         "table", "music", "tiger", "castle", "rocket", "silver", "forest", "kitten", "bridge", "winter"]


def items() -> list[dict]:
    rng = random.Random(20240601)
    out: list[dict] = []

    def add(task: str, prompt: str, kind: str, answer: list[str]) -> None:
        out.append({"id": f"cpu/{task}/{sum(1 for o in out if o['task'] == f'cpu/{task}')}", "task": f"cpu/{task}",
                    "prompt": prompt, "kind": kind, "answer": answer})

    for _ in range(12):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        add("add_small", f"What is {a} + {b}?{NUM}", "number", [str(a + b)])
    for _ in range(12):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        add("add_large", f"What is {a} + {b}?{NUM}", "number", [str(a + b)])
    for _ in range(12):
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        add("multiply", f"What is {a} times {b}?{NUM}", "number", [str(a * b)])
    for _ in range(12):
        a, b = rng.sample(range(10, 100), 2)
        add("compare", f"Which number is larger, {a} or {b}?{NUM}", "number", [str(max(a, b))])
    for _ in range(10):
        start, step = rng.randint(1, 20), rng.randint(2, 5)
        seq = [start + step * i for i in range(4)]
        add("sequence", f"What number comes next: {', '.join(map(str, seq))}, ?{NUM}", "number",
            [str(start + step * 4)])
    for w in WORDS[:10]:
        add("letter_count", f"How many letters are in the word '{w}'?{NUM}", "number", [str(len(w))])
    for w in WORDS[10:20]:
        add("first_letter", f"What is the first letter of the word '{w}'? Answer with just the letter.", "word",
            [w[0]])
    for i, d in enumerate(DAYS):
        add("next_day", f"Which day of the week comes after {d}?{WORD}", "word", [DAYS[(i + 1) % 7]])
    for i, m in enumerate(MONTHS):
        add("next_month", f"Which month comes after {m}?{WORD}", "word", [MONTHS[(i + 1) % 12]])
    for country, city in CAPITALS.items():
        add("capital", f"What is the capital of {country}? Answer with the city name only.", "word", [city])
    for word, opposites in ANTONYMS.items():
        add("antonym", f"What is the opposite of '{word}'?{WORD}", "word", opposites)
    for word, plural in PLURALS.items():
        add("plural", f"What is the plural of '{word}'?{WORD}", "word", [plural])
    for question, answer in FACTS:
        add("yes_no", f"{question}{YN}", "yesno", [answer])
    return out


def main() -> None:
    rows = items()
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} prompts to {OUT}")


if __name__ == "__main__":
    main()
