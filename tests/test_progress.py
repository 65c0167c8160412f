"""Progress: a line now and then in a pipe, a bar on a terminal, and the long steps use it."""

import functools
import io

import numpy as np
from rich.console import Console

from recscope import evaluate as evaluate_mod
from recscope import progress
from recscope.progress import track


def test_in_a_pipe_a_long_step_prints_lines():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=60)
    assert list(track(range(3), "explain-eval: shapley", console=console, every=0)) == [0, 1, 2]
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("explain-eval: shapley: 1/3 (0 s, about 0 s left)")
    assert lines[-1].startswith("explain-eval: shapley: 3/3 done in 0 s") and len(lines) == 3
    assert "\x1b" not in buf.getvalue(), "no terminal codes in a pipe"


def test_a_short_step_in_a_pipe_prints_nothing():
    buf = io.StringIO()
    assert sum(track(iter(range(5)), "quick", console=Console(file=buf, force_terminal=False))) == 10
    assert buf.getvalue() == ""


def test_on_a_terminal_a_bar_is_drawn_and_nested_steps_share_it():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=80)
    for _ in track(range(2), "explain-eval: scoring", console=console):
        assert list(track(range(2), "explain-eval: shapley", console=console)) == [0, 1]
    text = buf.getvalue()
    assert "━" in text and "explain-eval: scoring" in text and "0/2" in text
    assert "explain-eval: shapley" in text, "the inner step is a second line of the same bar"
    assert progress._live is None


def test_full_ranking_evaluation_shows_progress_when_asked(monkeypatch, capsys):
    from recscope.data import load_dataset, make_split

    data = load_dataset("synthetic:users=30,items=20,seed=3")
    cases = make_split(data).test
    monkeypatch.setattr(evaluate_mod, "track", functools.partial(track, every=0))
    popularity = evaluate_mod.PopularityScorer(data, make_split(data).train)
    args = (popularity, data, cases, 8)
    ranks = evaluate_mod.rank_targets(*args, batch_size=10, progress="evaluate: popularity")
    err = capsys.readouterr().err
    assert "evaluate: popularity: 1/3" in err and "evaluate: popularity: 3/3 done" in err
    assert np.array_equal(ranks, evaluate_mod.rank_targets(*args, batch_size=10)), "the same ranks, shown or not"
    assert capsys.readouterr().err == "", "no progress unless asked (training validates inside its own bar)"
