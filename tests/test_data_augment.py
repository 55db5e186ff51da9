"""``augment``: no-fit trajectories are checked to fit nothing, and pass verify; the
same-domain (near-miss) ones offer only catalogue tools that cannot stand in for a
called one."""

from __future__ import annotations

import json
import random

import pytest

from moragent.data.augment import (
    content_words,
    fits_nothing,
    near_miss_tools,
    near_miss_trajectories,
    no_fit_trajectories,
    no_fit_trajectory,
)
from moragent.data.verify import check_data
from moragent.roles import Role
from moragent.trajectory import (
    ExecutorStep,
    ObservationStep,
    ReasonerStep,
    SummarizerStep,
    ToolCall,
    ToolResult,
    Trajectory,
)


def tool(name: str, description: str) -> dict:
    return {
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": {"x": {"type": "string"}},
            "required": ["x"],
        },
    }


WEATHER = tool("get_weather", "Current weather for a city.")
HOTELS = tool("search_hotels", "Find hotels in a city for given dates.")
STOCKS = tool("stock_price", "The latest price of a stock ticker.")
RECIPES = tool("find_recipe", "Recipes that use the given ingredients.")


def one_call(query: str, own: dict) -> Trajectory:
    call = ToolCall(own["name"], {"x": "a"})
    return Trajectory(
        query=query,
        tools=[own],
        steps=[
            ReasonerStep("Call it.", Role.EXECUTOR),
            ExecutorStep([call]),
            ObservationStep([ToolResult(own["name"], "ok")]),
            ReasonerStep("Done.", Role.SUMMARIZER),
            SummarizerStep("It is done."),
        ],
    )


def test_content_words_split_names_and_drop_function_words() -> None:
    assert content_words("getWeather for the hotels, please") == {"weather", "hotel"}


def test_fits_nothing_rejects_shared_names_and_shared_words() -> None:
    weather = one_call("What is the weather in Paris?", WEATHER)
    assert fits_nothing(weather, [STOCKS])
    assert not fits_nothing(weather, [STOCKS, WEATHER])  # its own tool is offered
    assert not fits_nothing(weather, [tool("forecast", "Weather forecast for a place.")])
    assert not fits_nothing(Trajectory(query="Hello", steps=[]), [STOCKS])  # no own tools


def test_no_fit_trajectories_verify_and_never_offer_a_fitting_tool() -> None:
    pool = [
        one_call("What is the weather in Paris?", WEATHER),
        one_call("Book me a hotel in Rome for May.", HOTELS),
        one_call("How much is AAPL trading at?", STOCKS),
        one_call("What can I cook with eggs and leeks?", RECIPES),
    ]
    made, stats = no_fit_trajectories(pool, count=3, seed=1)

    assert stats.asked == 3 and stats.made == len(made) == 3
    queries = [trajectory.query for trajectory in made]
    assert len(set(queries)) == 3  # each query once
    for trajectory in made:
        reasons, _ = check_data(json.loads(trajectory.to_json()))
        assert reasons == []
        source = next(t for t in pool if t.query == trajectory.query)
        offered = {t["name"] for t in trajectory.tools}
        assert source.tools[0]["name"] not in offered
        first, last = trajectory.steps
        assert isinstance(first, ReasonerStep) and first.next is Role.SUMMARIZER
        assert isinstance(last, SummarizerStep) and last.answer
        assert trajectory.calls == []
        assert trajectory.meta["source"] == "augment:no-fit"


def test_no_fit_gives_up_on_queries_every_donor_fits() -> None:
    pool = [
        one_call("Weather in Paris?", WEATHER),
        one_call("Weather in Rome?", tool("weather_now", "Weather right now.")),
    ]
    made, stats = no_fit_trajectories(pool, count=2, seed=0, tries=5)
    assert made == [] and stats.no_donor == 2


def test_no_fit_is_deterministic_for_a_seed() -> None:
    pool = [
        one_call("What is the weather in Paris?", WEATHER),
        one_call("Book me a hotel in Rome for May.", HOTELS),
        one_call("How much is AAPL trading at?", STOCKS),
    ]
    first, _ = no_fit_trajectories(pool, 3, seed=7)
    second, _ = no_fit_trajectories(pool, 3, seed=7)
    assert [t.to_json() for t in first] == [t.to_json() for t in second]


def test_a_general_search_tool_is_never_a_donor() -> None:
    weather = one_call("What is the weather in Paris?", WEATHER)
    assert not fits_nothing(weather, [tool("search", "Search Wikipedia for an entity.")])


def test_a_long_description_is_not_quoted() -> None:
    long = tool("describe_rock", "Retrieve " + "very " * 30 + "detailed facts about a rock.")
    pool = [one_call("What is the weather in Paris?", WEATHER), one_call("Rock facts?", long)]
    made, _ = no_fit_trajectories(pool, count=1, seed=3, max_tools=1)
    (trajectory,) = [t for t in made if t.tools[0]["name"] == "describe_rock"] or made
    text = trajectory.steps[0].thought + trajectory.steps[1].answer
    assert "very very" not in text


def catalogue_call(query: str, called: dict, *others: dict) -> Trajectory:
    """One call of ``called`` with ``others`` also offered (as Seal-Tools does)."""
    trajectory = one_call(query, called)
    trajectory.tools = [*others, called]
    return trajectory


NURSES = tool("getHealthWorkforce", "Number of health workers in a country.")
OUTBREAKS = tool("getOutbreaks", "Disease outbreaks reported in a region.")
AED = tool("getNearestAEDLocation", "The nearest defibrillator to a place.")
WORKFORCE_TOO = tool("getWorkforceStats", "Labour statistics by sector.")
WEB = tool("webSearch", "Search the internet.")


def test_near_miss_tools_are_the_uncalled_ones_that_cannot_stand_in() -> None:
    trajectory = catalogue_call(
        "How many nurses work in Kenya?", NURSES, OUTBREAKS, AED, WORKFORCE_TOO, WEB
    )
    names = [t["name"] for t in near_miss_tools(trajectory)]
    # WORKFORCE_TOO shares "workforce" with the called tool; WEB is a general search
    assert names == ["getOutbreaks", "getNearestAEDLocation"]
    # a tool named after a word of the query is not offered either
    asks_outbreaks = catalogue_call("Nurses and outbreaks in Kenya?", NURSES, OUTBREAKS, AED)
    assert [t["name"] for t in near_miss_tools(asks_outbreaks)] == ["getNearestAEDLocation"]
    assert near_miss_tools(one_call("Weather in Paris?", WEATHER)) == []  # nothing left over
    assert near_miss_tools(Trajectory(query="Hi", tools=[NURSES], steps=[])) == []  # no call


def test_near_miss_trajectories_verify_and_hand_over_to_the_summarizer() -> None:
    pool = [
        catalogue_call("How many nurses work in Kenya?", NURSES, OUTBREAKS, AED),
        catalogue_call("Any cholera outbreaks in Chad?", OUTBREAKS, NURSES, AED),
        catalogue_call("How many nurses work in Peru?", NURSES, OUTBREAKS),
        one_call("What is the weather in Paris?", WEATHER),  # no leftovers: counted
    ]
    made, stats = near_miss_trajectories(
        pool, count=10, seed=2, exclude=["How many nurses work in Peru?"]
    )

    assert stats.made == len(made) == 2 and stats.no_donor == 1
    for trajectory in made:
        reasons, _ = check_data(json.loads(trajectory.to_json()))
        assert reasons == []
        source = next(t for t in pool if t.query == trajectory.query)
        called = {call.name for call in source.calls}
        offered = {t["name"] for t in trajectory.tools}
        assert offered and not offered & called and offered <= {t["name"] for t in source.tools}
        first, last = trajectory.steps
        assert isinstance(first, ReasonerStep) and first.next is Role.SUMMARIZER
        assert isinstance(last, SummarizerStep) and last.answer
        assert trajectory.meta["source"] == "augment:near-miss"
    again, _ = near_miss_trajectories(
        pool, count=10, seed=2, exclude=["How many nurses work in Peru?"]
    )
    assert [t.to_json() for t in again] == [t.to_json() for t in made]


def test_fit_and_no_fit_thoughts_turn_at_the_verdict() -> None:
    """A call thought and a no-fit thought both start with the tool and what it does;
    they differ from the verdict on ("which is what" / "which is not what")."""
    from moragent.data.complete import CompleteStats, complete_trajectory
    from moragent.data.rules import RulesTeacher, purpose

    pool = [
        one_call("What is the weather in Paris?", WEATHER),
        one_call("A hotel in Rome for May?", HOTELS),
        one_call("Price of ACME stock?", STOCKS),
    ]
    made, _ = no_fit_trajectories(pool, count=3, seed=1, max_tools=2)
    assert made
    for trajectory in made:
        thought = trajectory.steps[0].thought
        named = next(t for t in trajectory.tools if thought.startswith(t["name"] + " can "))
        assert thought.startswith(f"{named['name']} can {purpose(named, named['name'])}, ")
        assert ", which is not what " in thought
        for other in trajectory.tools:
            assert other["name"] in thought

    fit = one_call("What is the weather in Paris?", WEATHER)
    fit.steps[0] = ReasonerStep("", Role.EXECUTOR)
    for seed in range(6):
        complete_trajectory(fit, RulesTeacher(seed), CompleteStats())
        thought = fit.steps[0].thought
        assert thought.startswith(
            "get_weather can help with current weather for a city, which is what "
        )
        fit.steps[0] = ReasonerStep("", Role.EXECUTOR)


def test_no_fit_thoughts_name_any_offered_tool_not_just_the_first() -> None:
    """A call thought names the called tool wherever it stands in the catalogue; a
    no-fit thought that always named the first would teach "the first is never called"."""
    source = one_call("What is the weather in Paris?", WEATHER)
    named = set()
    for seed in range(40):
        rng = random.Random(seed)
        made = no_fit_trajectory(source, [HOTELS, STOCKS], rng)
        named.add(made.steps[0].thought.split(" ")[0])
    assert named == {HOTELS["name"], STOCKS["name"]}


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("Retrieve the sales of a shop.", "retrieve the sales of a shop"),
        ("Returns the weather for a city", "return the weather for a city"),
        ("Identifies all faces in an image", "identify all faces in an image"),
        ("Searches the web. Slow.", "search the web"),
        ("This tool gets the price of a stock", "get the price of a stock"),
        ("A function that computes the sum", "compute the sum"),
        ("Current weather for a city", "help with current weather for a city"),
        ("Status of an order", "help with status of an order"),
        ("API for stock prices", "help with API for stock prices"),
        ("Apply for a grant", "apply for a grant"),
        ("", "use tool_x"),
    ],
)
def test_purpose_is_a_verb_phrase_after_can(description: str, expected: str) -> None:
    from moragent.data.rules import purpose

    assert purpose({"description": description}, "tool_x") == expected
