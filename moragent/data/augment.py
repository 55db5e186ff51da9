"""``augment``: no-fit trajectories, where the right move is to call nothing.

The public tool-use sets almost never show a question that none of the offered tools
can serve, so a model tuned on them calls *something* every time (BFCL's
``irrelevance`` category measures exactly this). A no-fit trajectory takes the query
of one trajectory and the tools of another that cannot serve it: the reasoner says so
and hands over to the summarizer, who tells the user what is missing.

"Cannot serve it" is checked, not assumed: the donor's tools share no name with the
tools the query was written for, and no content word of the query appears in the
donor tools' names or descriptions, and no donor tool is a general search (a web or
Wikipedia search can serve almost any question). Pairs that fail the check are skipped,
so the number made can fall short of the number asked for; the stats say how many.

Tools of an unrelated subject are an easy case. The hard one, which BFCL's
``irrelevance`` questions pose, is a tool of a neighbouring subject (a triangle's area
asked, a body-mass-index tool offered). :func:`near_miss_trajectories` makes those from
the query's own catalogue: Seal-Tools offers each query several tools of its domain
and calls only some, so the ones left over are same-domain tools that the data's
authors did not use. They are kept only when their names share no content word with
the called tools' names or with the query (so ``get_weather_forecast`` is never
offered in place of ``get_weather``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from moragent.data.rules import purpose
from moragent.roles import Role
from moragent.trajectory import ReasonerStep, SummarizerStep, Trajectory

#: The same shape as the rules teacher's call thoughts (the tool, what it does, then the
#: verdict), so that the verdict, not the first word, is where a thought turns.
_THOUGHTS = (
    "{tool} can {purpose}, which is not what this question needs, so there is nothing "
    "useful to call.",
    "{tool} can {purpose}, which is not what is asked here. I should not call any tool.",
    "{tool} can {purpose}, which is not what this request is about: no call fits it.",
)
#: the same for a tool whose purpose is too long to quote
_THOUGHTS_UNQUOTED = (
    "{tool} cannot do what this question asks, so there is nothing useful to call.",
    "{tool} is not a tool for what is asked here. I should not call any tool.",
)
#: added when several tools are offered
_OTHERS = " {others} would not help either."
_ANSWERS = (
    "I can't help with that using the tools I have: {names} cannot do it.",
    "None of my tools ({names}) can do this, so I can't answer it reliably.",
    "Sorry, that is outside what my tools can do ({tool} can only {purpose}).",
)
#: a purpose longer than this is not quoted (templates without it are used)
_MAX_PURPOSE = 90
#: words that mark a general search tool, which fits almost any question
_GENERAL = frozenset({"search", "wikipedia", "google", "internet", "browse", "lookup"})
_STOP = frozenset(
    """about above after again also another any around because been before being below
    between both can't could does doing down during each from further have having here
    into itself just more most much must need only other over same should some such than
    that their them then there these they this those through under until very want what
    when where which while will with would your yours please give tell find show make""".split()
)


def content_words(text: str) -> set[str]:
    """Lower-case words of four letters or more, without common function words.

    Crude stemming (a trailing "s" dropped) so that "hotel" meets "hotels".
    """
    words = re.findall(r"[a-z]{4,}", re.sub(r"([a-z])([A-Z])", r"\1 \2", text).lower())
    return {word.removesuffix("s") for word in words if word not in _STOP}


def tool_words(tools: Iterable[dict[str, Any]]) -> set[str]:
    """The content words of tools' names and descriptions (``get_hotel`` gives ``hotel``)."""
    text = " ".join(
        f"{tool.get('name', '')} {tool.get('description', '')}".replace("_", " ") for tool in tools
    )
    return content_words(text)


def fits_nothing(trajectory: Trajectory, tools: list[dict[str, Any]]) -> bool:
    """Whether ``tools`` plainly cannot serve ``trajectory``'s query (see the module doc)."""
    own = {tool.get("name") for tool in trajectory.tools} | {call.name for call in trajectory.calls}
    if not own or own & {tool.get("name") for tool in tools}:
        return False
    words = tool_words(tools)
    return not (words & _GENERAL or content_words(trajectory.query) & words)


def _name_words(tools: Iterable[dict[str, Any]]) -> set[str]:
    return content_words(" ".join(str(tool.get("name", "")).replace("_", " ") for tool in tools))


def near_miss_tools(trajectory: Trajectory) -> list[dict[str, Any]]:
    """The tools of ``trajectory``'s catalogue that it does not call and that cannot
    stand in for a called one (see the module doc); [] when none."""
    called = {call.name for call in trajectory.calls}
    if not called:
        return []
    taken = _name_words(t for t in trajectory.tools if t.get("name") in called)
    taken |= content_words(trajectory.query)
    return [
        tool
        for tool in trajectory.tools
        if tool.get("name") not in called
        and not _name_words([tool]) & taken
        and not tool_words([tool]) & _GENERAL
    ]


def no_fit_trajectory(
    trajectory: Trajectory,
    tools: list[dict[str, Any]],
    rng: random.Random,
    kind: str = "no-fit",
) -> Trajectory:
    """``trajectory``'s query offered ``tools`` instead: the reasoner calls nothing."""
    names = [str(tool.get("name")) for tool in tools]
    # The tool the thought names is drawn, not the catalogue's first: a call thought
    # names the called tool wherever it stands, and naming the first here would teach
    # "the first tool is never called".
    pick = rng.randrange(len(tools))
    text = purpose(tools[pick], names[pick])
    fill = {"names": ", ".join(names), "tool": names[pick], "purpose": text}
    quotable = len(text) <= _MAX_PURPOSE
    thought = rng.choice(_THOUGHTS if quotable else _THOUGHTS_UNQUOTED).format(**fill)
    others = names[:pick] + names[pick + 1 :]
    if others:
        thought += _OTHERS.format(others=" and ".join(others))
    answer = rng.choice([a for a in _ANSWERS if quotable or "{purpose}" not in a])
    answer = answer.format(**fill)
    return Trajectory(
        query=trajectory.query,
        tools=tools,
        steps=[
            ReasonerStep(thought, Role.SUMMARIZER, synthetic=True),
            SummarizerStep(answer, synthetic=True),
        ],
        system=trajectory.system,
        meta={
            "source": f"augment:{kind}",
            "query_from": trajectory.meta.get("id") or trajectory.meta.get("source"),
        },
    )


@dataclass
class AugmentStats:
    """How many no-fit trajectories were asked for and made."""

    asked: int = 0
    made: int = 0
    #: query trajectories for which no donor passed the check
    no_donor: int = 0


def no_fit_trajectories(
    trajectories: list[Trajectory],
    count: int,
    seed: int = 0,
    max_tools: int = 3,
    tries: int = 20,
) -> tuple[list[Trajectory], AugmentStats]:
    """Up to ``count`` no-fit trajectories from the queries and tools of ``trajectories``.

    Each uses a distinct query (only trajectories that call a tool), paired with one to
    ``max_tools`` tools of a donor that passes :func:`fits_nothing`; ``tries`` donors
    are drawn per query before it is given up.
    """
    rng = random.Random(seed)
    stats = AugmentStats(asked=count)
    donors = [t for t in trajectories if t.tools]
    queries = [t for t in trajectories if t.calls and not t.history]
    rng.shuffle(queries)
    made: list[Trajectory] = []
    for source in queries:
        if len(made) >= count or not donors:
            break
        for _ in range(tries):
            donor = rng.choice(donors)
            tools = rng.sample(donor.tools, min(len(donor.tools), rng.randint(1, max_tools)))
            if fits_nothing(source, tools):
                made.append(no_fit_trajectory(source, tools, rng))
                break
        else:
            stats.no_donor += 1
    stats.made = len(made)
    return made, stats


def near_miss_trajectories(
    trajectories: list[Trajectory],
    count: int,
    seed: int = 0,
    max_tools: int = 3,
    exclude: Iterable[str] = (),
) -> tuple[list[Trajectory], AugmentStats]:
    """Up to ``count`` no-fit trajectories whose tools are of the query's own domain.

    Each query (trajectories that call a tool, none with a history, none whose query is
    in ``exclude``) is offered one to ``max_tools`` of its :func:`near_miss_tools`;
    queries with none are counted in ``no_donor``. Meta source ``augment:near-miss``.
    """
    rng = random.Random(seed)
    stats = AugmentStats(asked=count)
    skip = set(exclude)
    queries = [t for t in trajectories if t.calls and not t.history and t.query not in skip]
    rng.shuffle(queries)
    made: list[Trajectory] = []
    seen: set[str] = set()
    for source in queries:
        if len(made) >= count:
            break
        if source.query in seen:
            continue
        tools = near_miss_tools(source)
        if not tools:
            stats.no_donor += 1
            continue
        seen.add(source.query)
        picked = rng.sample(tools, min(len(tools), rng.randint(1, max_tools)))
        made.append(no_fit_trajectory(source, picked, rng, kind="near-miss"))
    stats.made = len(made)
    return made, stats
