"""A small corpus in every format: each document holds one fact that only it answers, among paragraphs on
other things, and a question for that fact (shared by the retrieval tests and the HTTP tests)."""

from __future__ import annotations

from dataclasses import dataclass

from tests.documents.fixtures import make_docx, make_pdf


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    data: bytes
    question: str
    fact: str  # a phrase of the passage that answers
    page: int | None = None
    section: str | None = None


FILLER = [
    "The company was founded in a small workshop and has grown steadily over three decades of work.",
    "Customer service can be reached by telephone on weekdays between nine in the morning and five.",
    "All materials used in production are tested for durability and recycled where this is possible.",
    "Annual reports are published every spring and summarise the results of the previous financial year.",
]

PDF_FACT = "The warranty on the Aquaflow pump lasts seven years when the pump is registered within thirty days."
DOCX_FACT = "Employees may claim up to 45 euros per day for meals while travelling abroad on company business."
HTML_FACT = "Bake the sourdough loaf at 240 degrees for twenty minutes with the lid on, then uncovered."
MD_FACT = "Water tomato plants at the base early every morning and never wet the leaves, which invites blight."
TXT_FACT = "The recommended tyre pressure for the hatchback is 2.4 bar at the front and 2.6 bar at the rear."
PART_FACT = "Spare seal kit XK-4410 fits every Aquaflow model built after 2019."


def _pdf() -> bytes:
    return make_pdf(
        [
            [
                "Aquaflow pumps move water for homes and gardens. " + FILLER[0],
                "Install the pump on a level base and connect the hoses before switching it on. " + FILLER[1],
            ],
            [PDF_FACT + " Keep the receipt as proof of purchase.", FILLER[2]],
            ["Cleaning: rinse the filter basket under running water once a month. " + FILLER[3], PART_FACT],
        ],
        title="Aquaflow pump manual",
    )


def _docx() -> bytes:
    return make_docx(
        [
            ("Travel policy", ["This policy covers business travel for all staff. " + FILLER[0]]),
            ("Transport", ["Book economy class for flights under six hours. Trains are preferred in Europe."]),
            ("Meals", [DOCX_FACT + " Alcohol is not reimbursed."]),
            ("Hotels", ["Hotels must be booked through the travel portal at the negotiated rates. " + FILLER[1]]),
        ]
    )


def _html() -> bytes:
    return (
        "<!doctype html><html><head><title>Country sourdough</title></head><body>"
        "<h1>Country sourdough</h1>"
        "<h2>Starter</h2><p>Feed the starter with equal weights of flour and water the evening before. "
        f"{FILLER[2]}</p>"
        "<h2>Shaping</h2><p>Fold the dough four times during the first two hours, then shape it into a round "
        f"and leave it in a basket overnight in the fridge. {FILLER[3]}</p>"
        f"<h2>Baking</h2><p>{HTML_FACT} Let it cool for an hour before cutting.</p>"
        "</body></html>"
    ).encode()


def _markdown() -> bytes:
    return (
        "# Kitchen garden\n\n"
        f"## Soil\n\nDig compost into the beds in autumn so it breaks down over winter. {FILLER[0]}\n\n"
        f"## Tomatoes\n\n{MD_FACT} Pinch out the side shoots each week.\n\n"
        f"## Beans\n\nSow runner beans in late spring against a frame of canes. {FILLER[1]}\n"
    ).encode()


def _text() -> bytes:
    return (
        "Car notes\n\n"
        f"The hatchback needs an oil change every fifteen thousand kilometres. {FILLER[2]}\n\n"
        f"{TXT_FACT}\n\n"
        f"Winter tyres go on in November and come off in April. {FILLER[3]}\n"
    ).encode()


CASES = [
    Case("pump-manual.pdf", _pdf(), "How long does the pump warranty last?", "seven years", page=2),
    Case("travel-policy.docx", _docx(), "How much can I claim for food on a trip abroad?", "45 euros", section="Meals"),
    Case("sourdough.html", _html(), "At what temperature should I bake the bread?", "240 degrees", section="Baking"),
    Case("garden.md", _markdown(), "When should I water my tomatoes?", "never wet the leaves", section="Tomatoes"),
    Case("car.txt", _text(), "What tyre pressure does the car need?", "2.4 bar"),
]
