"""The check runner itself: the guard's tripwires, the time limit, the message format."""

from __future__ import annotations

import sys
import threading

import pytest
import torch
import torch.nn.functional as F

from llmkit.course.checks.runner import (
    REFERENCE_PACKAGE,
    Case,
    CheckFailed,
    Exercise,
    Slip,
    compare,
    gradient_after,
    wrapper_source,
)


def merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if tuple(ids[i : i + 2]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


MERGE = Exercise(
    name="_runner_merge",
    reference="llmkit.tokenizers:merge",
    fixed=[([1, 2, 3], (1, 2), 9)],
    random=lambda rng: ([rng.randrange(3) for _ in range(10)], (1, 1), 9),
    cases=5,
    time_limit=1.0,
)

ATTENTION = Exercise(
    name="_runner_attention",
    reference="llmkit.course.checks.reference.ch01:bigram_counts_wrapped",  # any callable
    forbid=["torch.nn.functional:scaled_dot_product_attention"],
    fixed=[Case((torch.ones(1, 1, 2, 2),))],
    cases=1,
)


def _fails(fn, exercise=MERGE, match="must be written without"):
    with pytest.raises(CheckFailed, match=match) as info:
        exercise.check(fn, seed=0)
    return str(info.value)


def test_a_correct_answer_passes_with_one_verdict_line(capsys):
    MERGE.check(merge, seed=0)
    assert capsys.readouterr().out == (
        "✔ _runner_merge: 5 cases match the reference (1 fixed, 4 random)\n"
    )


def test_the_reference_itself_and_a_swallowed_tripwire_fail():
    import llmkit.tokenizers

    _fails(llmkit.tokenizers.merge)

    def sly(ids, pair, new_id):
        try:
            return llmkit.tokenizers.merge(ids, pair, new_id)
        except BaseException:  # noqa: BLE001 - the student hides the tripwire
            return merge(ids, pair, new_id)

    assert "llmkit.tokenizers.merge" in _fails(sly)


def test_a_copy_of_the_module_loaded_from_its_file_is_caught():
    import importlib.util

    import llmkit.tokenizers

    def copy_of_library(ids, pair, new_id):
        spec = importlib.util.spec_from_file_location("copy", llmkit.tokenizers.__file__)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.merge(ids, pair, new_id)

    _fails(copy_of_library)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_thread_running_the_reference_is_caught():
    def threaded(ids, pair, new_id):
        from llmkit.tokenizers import merge as m

        box = []
        t = threading.Thread(target=lambda: box.append(m(ids, pair, new_id)))
        t.start()
        t.join()
        return box[0] if box else merge(ids, pair, new_id)

    _fails(threaded)


def test_the_reference_package_is_out_of_reach_during_the_call_only():
    seen = {}

    def look(ids, pair, new_id):
        seen["in sys.modules"] = any(m.startswith(REFERENCE_PACKAGE) for m in sys.modules)
        try:
            __import__(REFERENCE_PACKAGE + ".ch01")
            seen["imported"] = True
        except BaseException:  # noqa: BLE001 - the guard's tripwire, not only ImportError
            seen["imported"] = False
        return merge(ids, pair, new_id)

    import llmkit.course.checks.reference.ch01  # noqa: F401 - loaded before the check

    _fails(look, match="reference code")
    assert seen == {"in sys.modules": False, "imported": False}
    assert REFERENCE_PACKAGE + ".ch01" in sys.modules


@pytest.mark.parametrize(
    "route",
    [
        lambda q: F.scaled_dot_product_attention(q, q, q),
        lambda q: torch._C._nn.scaled_dot_product_attention(q, q, q),
        lambda q: torch.ops.aten.scaled_dot_product_attention(q, q, q),
    ],
    ids=["F", "torch._C", "torch.ops"],
)
def test_a_forbidden_torch_function_is_caught_by_every_route(route):
    msg = _fails(route, ATTENTION)
    assert "scaled_dot_product_attention" in msg


def test_switching_the_monitor_off_fails():
    def off(ids, pair, new_id):
        sys.setprofile(None)
        return merge(ids, pair, new_id)

    _fails(off, match="without sys.setprofile")


def test_time_limit_crash_none_and_modified_arguments():
    def loop(ids, pair, new_id):
        while True:
            pass

    def crash(ids, pair, new_id):
        raise ValueError("boom")

    def no_return(ids, pair, new_id):
        merge(ids, pair, new_id)

    def mutate(ids, pair, new_id):
        ids.append(0)
        return merge(ids[:-1], pair, new_id)

    assert "took longer than 1 s" in _fails(loop, match="took longer")
    assert "ValueError: boom" in _fails(crash, match="raised")
    assert "forget `return`" in _fails(no_return, match="returned None")
    assert "'ids'" in _fails(mutate, match="modified its argument")


def test_an_unfinished_stub_raises_not_implemented():
    def stub(ids, pair, new_id):
        raise NotImplementedError("merge")

    with pytest.raises(NotImplementedError):
        MERGE.check(stub, seed=0)


def test_a_wrong_answer_gets_the_one_message_format():
    def off_by_one(ids, pair, new_id):
        return merge(ids, pair, new_id + 1)

    lines = _fails(off_by_one, match="differs|is 10").splitlines()
    assert lines[0].startswith("_runner_merge: ")
    assert [ln.split(":")[0].strip() for ln in lines[1:]] == ["input", "expected", "got", "hint"]


def test_seeds_make_the_cases_reproducible(monkeypatch):
    a = MERGE._cases(5, __import__("random").Random(3))
    b = MERGE._cases(5, __import__("random").Random(3))
    assert [c.args for c in a] == [c.args for c in b]


def test_compare_checks_type_shape_dtype_and_values():
    t = torch.zeros(2, 3)
    assert compare(t, t) is None
    assert "shape" in compare(torch.zeros(3, 2), t)
    assert "dtype" in compare(t.double(), t)
    assert compare(t.double(), t, dtype=False) is None
    assert "tensor" in compare([0.0] * 6, t)
    assert "differs" in compare(t + 1, t)
    assert compare([1, (2, 3)], [1, (2, 3)]) is None
    assert "length" in compare([1], [1, 2])
    assert "keys" in compare({"a": 1}, {"b": 1})
    assert compare(0.1 + 0.2, 0.3) is None


def test_wrapper_source_replaces_only_the_definition():
    source = "import math\n\n\n@decorator\ndef _runner_merge(ids, pair, new_id):\n    return 1\n"
    out = wrapper_source("_runner_merge", source)
    assert out.startswith("import math\n\n\ndef _runner_merge(*args, **kwargs):")
    assert "llmkit.tokenizers" in out and "@decorator" not in out
    assert wrapper_source("_runner_merge", "x = 1\n") is None
    assert wrapper_source("no such exercise", source) is None


def test_the_guard_is_not_reachable_through_the_profile_hook():
    seen = {}

    def peek(ids, pair, new_id):
        hook = sys.getprofile()
        seen["self"] = getattr(hook, "__self__", None)
        return merge(ids, pair, new_id)

    MERGE.check(peek, seed=0)
    assert seen["self"] is None


@pytest.mark.parametrize(
    "escape",
    [
        "import signal\n    signal.setitimer(signal.ITIMER_REAL, 0)",
        "import threading\n    threading.setprofile(None)",
        "import _thread\n    _thread.start_new_thread(print, ())",
        "from transformers.utils.generic import to_py_obj\n    to_py_obj(1)",
    ],
    ids=["signal", "threading.setprofile", "_thread", "transformers"],
)
def test_what_would_blind_the_check_is_off_limits(escape):
    ns: dict = {"merge": merge}
    exec(f"def f(ids, pair, new_id):\n    {escape}\n    return merge(ids, pair, new_id)\n", ns)
    _fails(ns["f"])


def test_lazy_results_are_refused():
    class Late(list):  # a list that could compute its items at comparison time
        pass

    class LateTensor(torch.Tensor):
        pass

    def lazy(ids, pair, new_id):
        return Late(merge(ids, pair, new_id))

    _fails(lazy, match="should be a list")
    assert "should be a Tensor" in compare(torch.zeros(2).as_subclass(LateTensor), torch.zeros(2))

    class Number(int):
        pass

    assert "number" in compare(Number(3), 3)


def test_a_substituted_helper_keeps_the_students_type_and_falls_back():
    from collections import Counter

    from llmkit.course.checks.runner import Guard, _stand_in

    def own_counts(ids):
        return Counter(zip(ids, ids[1:], strict=False))

    def reference(ids):
        return dict(Counter(zip(ids, ids[1:], strict=False)))

    stand_in = _stand_in(reference, own_counts, None, Guard())
    assert type(stand_in([1, 1, 2])) is Counter  # equal: the student's own object
    assert stand_in.__defaults__ is None and stand_in.__kwdefaults__ is None

    def wrong(ids):
        return {}

    assert _stand_in(reference, wrong, None, Guard())([1, 2]) == {(1, 2): 1}

    def refuses(mask):
        raise TypeError("a bool mask, please")

    assert _stand_in(refuses, lambda mask: "mine", None, Guard())(0.5) == "mine"


def test_gradient_after_compares_the_gradient_with_the_reference():
    after = gradient_after(
        "torch:square", lambda case: case.args, slips=[Slip("torch:neg", "the slip's hint")]
    )
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    case = Case((x,))
    assert after(case, x * x) is None  # the reference's value and gradient
    assert "carries no gradient" in after(case, x.detach().square())[0]
    problem, hint = after(case, x.detach().square() + 0.0 * x)  # the value, gradient 0
    assert "right value here but not the right gradient" in problem
    assert "detach" in hint
    # the value of square, the gradient of neg (-1 everywhere): the slip is named
    assert after(case, x.detach().square() - x + x.detach())[1] == "the slip's hint"
    assert after(case, [1.0]) is None  # not a tensor: the value check speaks
