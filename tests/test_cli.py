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


def test_numeric_flags_show_their_range_and_refuse_outside_it(capsys):
    from fakefacegen import bounds

    assert cli.main(["generate", "-n", "0"]) == 2
    assert capsys.readouterr().err == "error: --n must be an integer in 1..100000 (got 0)\n"
    assert cli.main(["interpolate", "--seeds", "1,2", "--scale=9"]) == 2
    assert capsys.readouterr().err == "error: --scale must be an integer in 1..8 (got 9)\n"
    assert cli.main(["generate", "--psi", "nan"]) == 2
    assert capsys.readouterr().err == "error: --psi must be a number in [0, 1] (got nan)\n"
    with pytest.raises(SystemExit):
        cli.main(["interpolate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"frames per segment, both endpoints included, {bounds.WALK_FRAMES.short()} (default 16)" in out


def test_device_forms_and_backends(capsys):
    import torch

    from fakefacegen.runtime import select_device

    assert str(select_device("cpu")) == "cpu"
    for bad in ("tpu", "cuda:-1", "meta", "cpu:0", "CUDA"):
        with pytest.raises(ValueError, match=r"--device must be one of auto, cpu, cuda, cuda:N or mps"):
            select_device(bad)
        assert cli.main(["generate", "--device", bad]) == 2
        assert capsys.readouterr().err.startswith("error: --device must be one of auto, cpu, cuda, cuda:N or mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"^--device cuda:1: CUDA is not available on this machine"):
            select_device("cuda:1")
    else:
        with pytest.raises(ValueError, match="CUDA device"):
            select_device(f"cuda:{torch.cuda.device_count()}")


def test_resume_refuses_what_it_would_ignore(tmp_path, capsys):
    for extra in (["--batch-size", "8"], ["--seed", "1"], ["--eval-every", "5"], ["--outdir", "x"], ["--dry-run"]):
        assert cli.main(["train", "--resume", str(tmp_path / "run"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --resume continues a run with its saved config, so {extra[0]} would be ignored")
    assert cli.main(["train", "--config", "c.json", "--preset", "debug"]) == 2
    assert "give --config FILE or --preset NAME, not both" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
