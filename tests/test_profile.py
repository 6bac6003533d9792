"""llmkit.profile: one environment variable sizes every run."""

import pytest

from llmkit import profile


@pytest.mark.parametrize("name", ["smoke", "book", "full"])
def test_choose_returns_the_value_of_the_active_profile(monkeypatch, name):
    monkeypatch.setenv("LLMKIT_PROFILE", name)
    assert profile.current() == name
    assert profile.choose(smoke=1, book=2, full=3) == {"smoke": 1, "book": 2, "full": 3}[name]


def test_default_is_book(monkeypatch):
    monkeypatch.delenv("LLMKIT_PROFILE", raising=False)
    assert profile.choose(smoke="s", book="b", full="f") == "b"
    monkeypatch.setenv("LLMKIT_PROFILE", "")
    assert profile.current() == "book"


def test_value_is_case_and_space_insensitive(monkeypatch):
    monkeypatch.setenv("LLMKIT_PROFILE", " Smoke ")
    assert profile.current() == "smoke"


def test_unknown_profile_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv("LLMKIT_PROFILE", "fast")
    with pytest.raises(ValueError) as info:
        profile.choose(smoke=1, book=2, full=3)
    message = str(info.value)
    assert "LLMKIT_PROFILE" in message and "'fast'" in message
    for name in ("smoke", "book", "full"):
        assert name in message


def test_all_three_sizes_are_required():
    with pytest.raises(TypeError):
        profile.choose(smoke=1, book=2)  # type: ignore[call-arg]


@pytest.mark.parametrize("name", profile.PROFILES)
def test_summary_is_one_short_line_naming_the_profile(monkeypatch, name):
    monkeypatch.setenv("LLMKIT_PROFILE", name)
    line = profile.summary()
    assert line.startswith(f"profile {name}: ") and "\n" not in line
    assert len(line) <= 80  # fits the book's page without scrolling
