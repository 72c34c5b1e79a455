"""Generate the labelled tool-call and extraction set ``calls-labelled.jsonl`` (deterministic; run by hand).

Hand-written prompts of the two request classes products send besides chat, scored by
``serve/evaluation/calls.py``:

``tool_call`` (class ``tools``)
    a user request and three tools (the right one and two others), ``tool_choice: auto``;
    gold: the function's name and its arguments.
``extraction`` (class ``json_schema``)
    a short text to extract from, asked with a ``json_schema`` response format; gold: the object.

Every line is ``{"id", "task", "prompt", "kind", "answer", ...}``, the labelled-set format, plus
what the request needs (``tools`` or ``response_format``). Every gold value is stated in the prompt
in the form the schema asks for (or named in ``accept`` when two spellings are equally right: the
singular unit names were added there after the first run, which scored ``kilogram``/``pound`` wrong), so a
correct answer is decided by comparison alone.

    python deploy/eval/make_call_set.py   # rewrites deploy/eval/calls-labelled.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "calls-labelled.jsonl"


def fn(name: str, description: str, props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": props, "required": required or list(props)}}}


S, I, N = {"type": "string"}, {"type": "integer"}, {"type": "number"}


def d(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description}


TOOLS = {
    "weather": fn("get_weather", "Get the current weather in a city",
                  {"city": d(S, "city name"), "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}),
    "currency": fn("convert_currency", "Convert an amount of money from one currency to another",
                   {"amount": N, "from_currency": d(S, "ISO 4217 code, e.g. USD"),
                    "to_currency": d(S, "ISO 4217 code, e.g. EUR")}),
    "timer": fn("set_timer", "Start a countdown timer",
                {"minutes": d(I, "length of the timer in minutes"), "label": d(S, "what the timer is for")}),
    "email": fn("send_email", "Send an email",
                {"to": d(S, "recipient email address"), "subject": S, "body": S}),
    "event": fn("create_event", "Add an event to the calendar",
                {"title": S, "date": d(S, "YYYY-MM-DD"), "time": d(S, "24-hour HH:MM")}),
    "stock": fn("get_stock_price", "Get the latest price of a stock",
                {"symbol": d(S, "ticker symbol, e.g. AAPL")}),
    "flights": fn("search_flights", "Search for flights between two airports on a date",
                  {"origin": d(S, "IATA airport code"), "destination": d(S, "IATA airport code"),
                   "date": d(S, "YYYY-MM-DD")}),
    "translate": fn("translate_text", "Translate text into another language",
                    {"text": S, "target_language": d(S, "language name in English, e.g. German")}),
    "units": fn("convert_units", "Convert a quantity from one unit to another",
                {"value": N, "from_unit": S, "to_unit": S}),
    "todo": fn("add_todo", "Add a task to the to-do list",
               {"task": S, "priority": {"type": "string", "enum": ["low", "medium", "high"]}}),
    "table": fn("book_table", "Reserve a table at a restaurant",
                {"restaurant": S, "people": I, "time": d(S, "24-hour HH:MM")}),
    "music": fn("play_music", "Play songs by an artist", {"artist": S}),
}

# (task, prompt, gold function, gold arguments, the two other tools offered, accepted alternatives)
TOOL_ITEMS: list[tuple[str, str, str, dict[str, Any], tuple[str, str], dict[str, list[Any]]]] = [
    ("weather", "What's the weather in Lisbon right now? Give it to me in celsius.", "weather",
     {"city": "Lisbon", "unit": "celsius"}, ("stock", "timer"), {}),
    ("weather", "Is it hot in Phoenix today? I want the temperature in fahrenheit.", "weather",
     {"city": "Phoenix", "unit": "fahrenheit"}, ("flights", "music"), {}),
    ("weather", "Check the current weather for Oslo, in celsius please.", "weather",
     {"city": "Oslo", "unit": "celsius"}, ("currency", "todo"), {}),
    ("currency", "How much is 250 US dollars in euros? Use USD and EUR.", "currency",
     {"amount": 250, "from_currency": "USD", "to_currency": "EUR"}, ("weather", "units"), {}),
    ("currency", "Convert 1200 JPY to GBP.", "currency",
     {"amount": 1200, "from_currency": "JPY", "to_currency": "GBP"}, ("stock", "timer"), {}),
    ("currency", "I have 75.5 CHF. What is that in USD?", "currency",
     {"amount": 75.5, "from_currency": "CHF", "to_currency": "USD"}, ("units", "email"), {}),
    ("timer", "Set a timer for 12 minutes labelled pasta.", "timer",
     {"minutes": 12, "label": "pasta"}, ("event", "todo"), {}),
    ("timer", "Start a 45 minute timer called study session.", "timer",
     {"minutes": 45, "label": "study session"}, ("music", "weather"), {}),
    ("email", "Send an email to anna@example.com with the subject Lunch and the body See you at noon.", "email",
     {"to": "anna@example.com", "subject": "Lunch", "body": "See you at noon"}, ("event", "todo"), {}),
    ("email", "Email bob@work.org, subject Report, body The report is attached.", "email",
     {"to": "bob@work.org", "subject": "Report", "body": "The report is attached"}, ("translate", "timer"), {}),
    ("event", "Put a meeting titled Budget review in my calendar on 2025-03-14 at 15:30.", "event",
     {"title": "Budget review", "date": "2025-03-14", "time": "15:30"}, ("timer", "email"), {}),
    ("event", "Add Dentist to my calendar for 2025-06-02 at 09:00.", "event",
     {"title": "Dentist", "date": "2025-06-02", "time": "09:00"}, ("todo", "table"), {}),
    ("stock", "What is Microsoft trading at? Its ticker is MSFT.", "stock",
     {"symbol": "MSFT"}, ("currency", "weather"), {}),
    ("stock", "Get me the latest price of TSLA.", "stock",
     {"symbol": "TSLA"}, ("flights", "units"), {}),
    ("flights", "Find flights from JFK to LHR on 2025-07-01.", "flights",
     {"origin": "JFK", "destination": "LHR", "date": "2025-07-01"}, ("weather", "table"), {}),
    ("flights", "Search flights CDG to NRT for 2025-11-20.", "flights",
     {"origin": "CDG", "destination": "NRT", "date": "2025-11-20"}, ("event", "currency"), {}),
    ("translate", "Translate 'good morning' into Spanish.", "translate",
     {"text": "good morning", "target_language": "Spanish"}, ("email", "music"), {}),
    ("translate", "How do you say 'thank you very much' in German? Use the translation tool.", "translate",
     {"text": "thank you very much", "target_language": "German"}, ("weather", "todo"), {}),
    ("units", "Convert 5 miles to kilometers.", "units",
     {"value": 5, "from_unit": "miles", "to_unit": "kilometers"}, ("currency", "timer"),
     {"from_unit": ["mile", "mi"], "to_unit": ["kilometer", "km"]}),
    ("units", "How many pounds is 70 kilograms?", "units",
     {"value": 70, "from_unit": "kilograms", "to_unit": "pounds"}, ("stock", "weather"),
     {"from_unit": ["kilogram", "kg"], "to_unit": ["pound", "lb", "lbs"]}),
    ("todo", "Add 'buy milk' to my to-do list with low priority.", "todo",
     {"task": "buy milk", "priority": "low"}, ("timer", "email"), {}),
    ("todo", "Remind me to renew my passport, it's high priority. Put it on the to-do list.", "todo",
     {"task": "renew my passport", "priority": "high"}, ("event", "music"),
     {"task": ["renew passport", "renew the passport"]}),
    ("table", "Book a table for 4 at Chez Marie at 19:30.", "table",
     {"restaurant": "Chez Marie", "people": 4, "time": "19:30"}, ("event", "flights"), {}),
    ("music", "Play some songs by Nina Simone.", "music",
     {"artist": "Nina Simone"}, ("translate", "weather"), {}),
]


def obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or list(props),
            "additionalProperties": False}


B = {"type": "boolean"}
SCHEMAS = {
    "person": obj({"name": S, "age": I, "city": S}),
    "order": obj({"product": S, "quantity": I, "unit_price": N}),
    "book": obj({"title": S, "author": S, "year": I}),
    "contact": obj({"name": S, "email": S, "phone": S}),
    "review": obj({"product": S, "rating": {"type": "integer", "minimum": 1, "maximum": 5}, "recommend": B}),
    "meeting": obj({"title": S, "date": d(S, "YYYY-MM-DD"), "attendees": I}),
    "flight": obj({"airline": S, "flight_number": S, "from_city": S, "to_city": S}),
    "sentiment": obj({"sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]}}),
    "ingredients": obj({"ingredients": {"type": "array", "items": S}}),
}

# (task, prompt, schema, gold object, accepted alternatives)
EXTRACTION_ITEMS: list[tuple[str, str, str, dict[str, Any], dict[str, list[Any]]]] = [
    ("person", "Extract the person's name, age and city: Maria Lopez is 34 and lives in Valencia.", "person",
     {"name": "Maria Lopez", "age": 34, "city": "Valencia"}, {}),
    ("person", "Extract name, age and city. Text: Tom Becker, a 58 year old engineer from Hamburg, retired.",
     "person", {"name": "Tom Becker", "age": 58, "city": "Hamburg"}, {}),
    ("person", "Who is described, how old, and where do they live? 'Aiko Tanaka (27) moved to Kyoto last year.'",
     "person", {"name": "Aiko Tanaka", "age": 27, "city": "Kyoto"}, {}),
    ("order", "Extract the order: 3 desk lamps at 24.99 each.", "order",
     {"product": "desk lamp", "quantity": 3, "unit_price": 24.99}, {"product": ["desk lamps"]}),
    ("order", "From this line extract product, quantity and unit price: 'Qty 10 x USB cable @ 4.50'", "order",
     {"product": "USB cable", "quantity": 10, "unit_price": 4.5}, {"product": ["USB cables"]}),
    ("order", "Read the order and extract it: I'd like 2 notebooks, they cost 3 dollars each.", "order",
     {"product": "notebook", "quantity": 2, "unit_price": 3}, {"product": ["notebooks"]}),
    ("book", "Extract title, author and year: 'Pride and Prejudice' by Jane Austen was published in 1813.",
     "book", {"title": "Pride and Prejudice", "author": "Jane Austen", "year": 1813}, {}),
    ("book", "Extract the book's title, author and year from: George Orwell wrote Nineteen Eighty-Four in 1949.",
     "book", {"title": "Nineteen Eighty-Four", "author": "George Orwell", "year": 1949}, {}),
    ("book", "Book details please (title, author, year): The Hobbit, J. R. R. Tolkien, 1937.", "book",
     {"title": "The Hobbit", "author": "J. R. R. Tolkien", "year": 1937}, {"author": ["J.R.R. Tolkien"]}),
    ("contact", "Extract the contact: Call Priya Shah on 555-0142 or write to priya@shah.io.", "contact",
     {"name": "Priya Shah", "email": "priya@shah.io", "phone": "555-0142"}, {}),
    ("contact", ("Get name, email and phone from this signature: 'Best, Leo Martin | leo.martin@acme.com | "
     "020 7946 0018'"), "contact",
     {"name": "Leo Martin", "email": "leo.martin@acme.com", "phone": "020 7946 0018"}, {}),
    ("review", ("Extract the product, a 1-5 rating and whether the reviewer recommends it: 'The Zephyr kettle "
     "is great, 5 stars, I recommend it.'"), "review",
     {"product": "Zephyr kettle", "rating": 5, "recommend": True}, {"product": ["The Zephyr kettle"]}),
    ("review", ("Extract product, rating (1-5) and recommend (true/false): 'Gave the Aqua bottle 2 out of 5. It "
     "leaks. Would not recommend.'"), "review",
     {"product": "Aqua bottle", "rating": 2, "recommend": False}, {"product": ["the Aqua bottle"]}),
    ("review", ("Review: 'Nimbus headphones: 4/5, comfortable, I would recommend them to a friend.' Extract "
     "product, rating and recommend."), "review",
     {"product": "Nimbus headphones", "rating": 4, "recommend": True}, {}),
    ("meeting", ("Extract the meeting's title, date and number of attendees: Sprint planning on 2025-04-08 with "
     "6 attendees."), "meeting", {"title": "Sprint planning", "date": "2025-04-08", "attendees": 6}, {}),
    ("meeting", ("Meeting note: 'Board meeting, 2025-09-30, 12 people attending.' Extract title, date and "
     "attendees."), "meeting", {"title": "Board meeting", "date": "2025-09-30", "attendees": 12}, {}),
    ("flight", "Extract airline, flight number and the cities: Lufthansa flight LH400 from Frankfurt to New York.",
     "flight", {"airline": "Lufthansa", "flight_number": "LH400", "from_city": "Frankfurt",
                "to_city": "New York"}, {}),
    ("flight", "Your flight: KLM KL1234, Amsterdam to Oslo. Extract airline, flight number, from and to city.",
     "flight", {"airline": "KLM", "flight_number": "KL1234", "from_city": "Amsterdam", "to_city": "Oslo"}, {}),
    ("sentiment", "Classify the sentiment of this review: 'Absolutely loved it, best purchase this year!'",
     "sentiment", {"sentiment": "positive"}, {}),
    ("sentiment", "Classify the sentiment: 'It broke after two days and support never answered.'", "sentiment",
     {"sentiment": "negative"}, {}),
    ("sentiment", "Classify the sentiment of: 'The package arrived on Tuesday.'", "sentiment",
     {"sentiment": "neutral"}, {}),
    ("ingredients", "List the ingredients in order: Mix flour, sugar and eggs.", "ingredients",
     {"ingredients": ["flour", "sugar", "eggs"]}, {}),
    ("ingredients", ("Extract the ingredients in the order given: Toss tomatoes, basil and mozzarella with olive "
     "oil."), "ingredients", {"ingredients": ["tomatoes", "basil", "mozzarella", "olive oil"]}, {}),
    ("ingredients", "What ingredients does this need, in order? 'Boil rice, then add peas and butter.'",
     "ingredients", {"ingredients": ["rice", "peas", "butter"]}, {}),
]


def items() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    counts: dict[str, int] = {}

    def add(task: str, row: dict[str, Any]) -> None:
        n = counts.get(task, 0)
        counts[task] = n + 1
        out.append({"id": f"{task}/{n}", "task": task, **row})

    for task, prompt, gold, args, others, accept in TOOL_ITEMS:
        tools = [TOOLS[gold], *(TOOLS[o] for o in others)]
        # the right tool is not always first
        k = len(out) % 3
        tools = tools[k:] + tools[:k]
        add(f"tools/{task}", {"prompt": prompt, "kind": "tool_call", "tools": tools, "tool_choice": "auto",
                              "answer": {"name": TOOLS[gold]["function"]["name"], "arguments": args},
                              **({"accept": accept} if accept else {})})
    for task, prompt, schema, gold, accept in EXTRACTION_ITEMS:
        add(f"extract/{task}", {"prompt": prompt, "kind": "extraction",
                                "response_format": {"type": "json_schema", "json_schema": {
                                    "name": schema, "schema": SCHEMAS[schema], "strict": True}},
                                "answer": gold, **({"accept": accept} if accept else {})})
    return out


def main() -> None:
    rows = items()
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} prompts to {OUT}")


if __name__ == "__main__":
    main()
