"""The ``fakefacegen`` command line: every subcommand declared the same way, help on every option,
and the shared flags meaning the same wherever they appear."""

import argparse

import pytest

from fakefacegen import cli


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_command_comes_from_its_module_in_the_table():
    subs = _subparsers(cli._parser())
    assert len(subs) == len(cli.COMMANDS)
    assert {s.get_default("func").__module__ for s in subs.values()} == set(cli.COMMANDS)


@pytest.mark.parametrize("name", sorted(_subparsers(cli._parser())))
def test_every_option_has_help(name):
    s = _subparsers(cli._parser())[name]
    assert s.description and s.epilog, name
    for action in s._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"fakefacegen {name} {'/'.join(action.option_strings) or action.dest}: no help text"


def test_shared_flags_mean_the_same_everywhere():
    subs = _subparsers(cli._parser())
    seen: dict[str, dict[str, argparse.Action]] = {}
    for name, s in subs.items():
        for action in s._actions:
            for opt in action.option_strings:
                seen.setdefault(opt, {})[name] = action
    for flag in ("--which", "--truncation", "--psi"):
        actions = list(seen[flag].values())
        assert len(actions) > 1, flag
        assert len({(a.help, a.default, a.type, tuple(a.choices or ())) for a in actions}) == 1, flag
    # -n and --n are one flag wherever a count of images is asked for
    assert seen["-n"].keys() == seen["--n"].keys() >= {"generate", "evaluate"}
    # --device: the same values and words; training defaults to auto, sampling to cpu
    for name, a in seen["--device"].items():
        assert a.default == ("auto" if name == "train" else "cpu"), name
        assert a.help.startswith("auto, cpu, cuda, cuda:N or mps"), name
