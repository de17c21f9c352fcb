"""The command line's conventions: every option explained with its default, one name per concept (old names
still accepted, saying the new one), argument errors before any model loads, and the documented exit codes."""

import argparse
import os
import signal
import subprocess
import sys
import time

import pytest

from stylecore.cli import build_parser, main
from stylecore.cli_args import EXIT_CODES
from stylecore.data import save_image
from stylecore.synthetic import synthetic_photo

#: old option name → the name that replaced it (every command that takes the concept uses the new one)
RENAMED = {"--checkpoint": "--model", "--input": "--content", "--styles": "--style", "--batch": "--batch-size"}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return {"stylecore": parser, **sub.choices}


def test_every_command_has_a_description_and_every_option_its_help_default_and_the_exit_codes():
    commands = _commands()
    assert {"train", "stylize", "stylize-dataset", "optimize", "optimize-dataset", "serve", "check-losses"} <= set(commands)
    for name, command in commands.items():
        text = " ".join(command.format_help().split())  # unwrapped: a default may straddle a line break
        assert command.description, name
        assert "exit codes:" in text and all(f" {code} {meaning}" in text for code, meaning in EXIT_CODES.items()), name
        for action in command._actions:
            if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            assert action.help and action.help.strip(), f"stylecore {name} {action.option_strings[0]}: no help"
            shown = (action.default is not None and action.default is not False and action.default != []
                     and not isinstance(action, argparse.BooleanOptionalAction))
            if shown:  # a real default is visible in --help (stated by hand or appended by the formatter)
                assert "default" in action.help or f"(default: {action.default})" in text, (name, action.dest)
    stylize_help = commands["stylize-dataset"].format_help()
    assert "(default: round_robin)" in stylize_help and "(default: 8)" in stylize_help
    assert "seed of the random policy (default: 0)" in " ".join(stylize_help.split())  # 0 is a default too
    assert "None" not in stylize_help  # no default worth nothing is printed


def test_one_name_per_concept_across_commands():
    for name, command in _commands().items():
        for action in command._actions:
            if not action.option_strings:
                continue
            primary, *aliases = action.option_strings
            assert primary not in RENAMED, f"stylecore {name} still calls {RENAMED[primary]} {primary}"
            for alias in aliases:  # an old name survives only as an alias of its replacement
                if alias in RENAMED:
                    assert primary == RENAMED[alias], (name, alias, primary)


def test_old_option_names_still_work_and_say_what_replaced_them(capsys):
    parser = build_parser()
    args = parser.parse_args(["stylize", "--checkpoint", "models/run", "--content", "a.jpg", "--style", "b.jpg",
                              "--output", "out"])
    assert args.model == "models/run"
    assert "--checkpoint is the old name of --model" in capsys.readouterr().err
    args = parser.parse_args(["stylize-dataset", "--model", "m", "--input", "shards/", "--styles", "s1.jpg", "s2.jpg",
                              "--output", "out"])
    assert args.content == ["shards/"] and args.style == ["s1.jpg", "s2.jpg"]
    err = capsys.readouterr().err
    assert "--input is the old name of --content" in err and "--styles is the old name of --style" in err
    args = parser.parse_args(["check-losses", "--batch", "3"])
    assert args.batch_size == 3 and "--batch is the old name of --batch-size" in capsys.readouterr().err
    parser.parse_args(["stylize", "--model", "m", "--content", "a.jpg", "--style", "b.jpg", "--output", "out"])
    assert capsys.readouterr().err == ""  # the current names say nothing


def test_argument_errors_come_before_the_model_loads(tmp_path, capsys):
    save_image(synthetic_photo(1, 32), tmp_path / "photo.png")
    common = ["stylize", "--model", str(tmp_path / "no-such-model"), "--content", str(tmp_path / "photo.png"),
              "--style", str(tmp_path / "photo.png"), "--output", str(tmp_path / "out"), "--quiet"]
    # The model does not exist either: the argument error is the one reported, so no model was loaded first.
    assert main([*common, "--style-weights", "0.5", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--style-weights gives 2 weight(s) for 1 style(s)" in err and "no-such-model" not in err
    assert main([*common, "--max-pixels", "0"]) == 2
    assert "--max-pixels must be a positive integer" in capsys.readouterr().err
    assert main(common) == 2  # with good arguments, the missing model is the error
    assert "no-such-model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse's own refusals use the same status
        main(["stylize", "--content", "a.jpg"])
    assert exit_.value.code == 2


def test_ctrl_c_during_train_saves_the_step_it_finished_exits_130_and_the_same_command_resumes(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "stylecore.cli", "train", "--model", "adain", "--content", "synthetic:photos:8",
               "--style", "synthetic:artworks:4", "--batch-size", "2", "--size", "32", "--weights", "random:0",
               "--output", str(run), "--quiet"]
    process = subprocess.Popen([*command, "--steps", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in process.stdout:  # the last line before training starts
        if line.startswith("data:"):
            break
    time.sleep(4)  # some steps
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted (stopped after step" in err and "Traceback" not in err
    saved = sorted(run.glob("step-*"))
    assert len(saved) == 1 and (saved[0] / "model.safetensors").is_file()
    step = int(saved[0].name.split("-")[1])
    assert step >= 1
    # without --quiet and with no terminal to redraw a bar on (a log, CI): plain progress lines, no carriage returns
    logged = [part for part in command if part != "--quiet"]
    resumed = subprocess.run([*logged, "--steps", str(step + 1)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"step {step + 1}:" in resumed.stdout and (run / f"step-{step + 1:06d}").is_dir()
    assert f"train adain: step {step + 1}/{step + 1}, " in resumed.stderr and "\r" not in resumed.stderr
