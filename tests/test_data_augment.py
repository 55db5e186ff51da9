"""``augment``: no-fit trajectories are checked to fit nothing, and pass verify."""

from __future__ import annotations

import json

from moragent.data.augment import content_words, fits_nothing, no_fit_trajectories
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
