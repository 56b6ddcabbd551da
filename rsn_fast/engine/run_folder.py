"""Run folders: refuse to start over on top of a previous run, move it aside (or delete it) on request.

``train.py`` without ``--resume`` into a folder that holds checkpoints (or a training log) stops before touching
anything and says how to continue (``--resume auto``) or start over (``--overwrite``: the old folder is renamed
``<folder>.old-<time>``; ``--overwrite delete`` deletes it).

``--resume PATH`` with a checkpoint outside the run folder (another run's, a downloaded one) into a folder that
holds a run of its own is refused the same way: continuing there would mix the two runs' logs, overwrite this
folder's checkpoints of the same iterations and let retention delete the others. ``--resume PATH --overwrite``
moves (or deletes) this folder's run first; a checkpoint inside the run folder cannot be combined with
``--overwrite``, which would move it away. A job restarted by torchrun continues in its own folder unchecked.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time

from rsn_fast.engine import checkpoint as ckpt


class RunFolderError(RuntimeError):
    """The run folder holds a previous run and neither --resume nor --overwrite was given."""


def previous_run(run_dir: str) -> list[str]:
    """What of a previous run ``run_dir`` holds: checkpoint files and a non-empty log.jsonl (names, sorted)."""
    found = []
    folder = os.path.join(run_dir, ckpt.CKPT_DIR)
    if os.path.isdir(folder):
        found += [os.path.join(ckpt.CKPT_DIR, n) for n in sorted(os.listdir(folder)) if n.endswith(".pth")]
    log = os.path.join(run_dir, "log.jsonl")
    if os.path.isfile(log) and os.path.getsize(log) > 0:
        found.append("log.jsonl")
    return found


def move_aside(run_dir: str) -> str:
    """Rename ``run_dir`` to ``<run_dir>.old-<YYYYmmdd-HHMMSS>[-n]``; returns the new name."""
    base = f"{os.path.normpath(run_dir)}.old-{time.strftime('%Y%m%d-%H%M%S')}"
    dest, n = base, 1
    while os.path.exists(dest):
        dest, n = f"{base}-{n}", n + 1
    os.replace(run_dir, dest)
    return dest


def _script() -> str:
    """train.py as it was started (relative to the working folder when inside it)."""
    script = sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else "rsn_fast/train.py"
    rel = os.path.relpath(script)
    return script if rel.startswith("..") else rel


def command_line(argv: list[str], drop: tuple[str, ...] = ("--resume", "--overwrite"), add: str = "") -> str:
    """The training command as typed (argv of train.py), without the ``drop`` options, plus ``add``.

    Under torchrun the per-node launcher and process count come first.
    """
    out: list[str] = []
    skip_value = False
    for a in argv:
        if skip_value:
            skip_value = False
            if not a.startswith("-"):
                continue
        if a in drop:
            skip_value = True
            continue
        if any(a.startswith(d + "=") for d in drop):
            continue
        out.append(a)
    nproc = os.environ.get("LOCAL_WORLD_SIZE")
    if os.environ.get("TORCHELASTIC_RUN_ID") and nproc:
        head = ["torchrun", "--nproc_per_node", nproc, _script()]
    else:
        head = ["python", _script()]
    return shlex.join(head + out) + (f" {add}" if add else "")


def inside(path: str, folder: str) -> bool:
    """Whether ``path`` lies in ``folder`` (symbolic links and relative paths resolved)."""
    p, f = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([p, f]) == f


def _listing(found: list[str]) -> str:
    return ", ".join(found[:6]) + (f", ... ({len(found) - 6} more)" if len(found) > 6 else "")


def prepare(
    run_dir: str, resume: str | None, overwrite: str | None, argv: list[str], restarted: bool = False
) -> str:
    """Check or clear ``run_dir`` before training; returns a message for the log ("" when nothing was done).

    Args:
        resume: None, "auto" or a checkpoint path (see the module docstring for one outside ``run_dir``).
        overwrite: None, "move" or "delete".
        restarted: a torchrun restart of a job that passed this check already (its own files are not checked).

    Raises:
        RunFolderError: it holds a previous run and neither ``resume`` (of its own checkpoints) nor ``overwrite``
            is set; or ``overwrite`` would move away the checkpoint ``resume`` names.
    """
    if restarted:
        return ""
    foreign = bool(resume) and resume != "auto" and not inside(resume, run_dir)
    if resume and not foreign:
        if overwrite is not None:
            raise RunFolderError(
                f"--overwrite would move away the checkpoint --resume names ({resume} is inside the run folder "
                f"{run_dir}); nothing was changed.\n"
                f"  continue from it:  {command_line(argv, add='--resume ' + shlex.quote(resume))}"
            )
        return ""
    found = previous_run(run_dir)
    if not found:
        return ""
    if overwrite is None:
        if foreign:
            path = shlex.quote(resume)
            raise RunFolderError(
                f"the run folder {run_dir} already holds a run of its own ({_listing(found)}), and --resume "
                f"names a checkpoint outside it ({resume}): continuing that checkpoint here would mix the two "
                "runs' logs and overwrite or delete this folder's checkpoints; nothing was changed.\n"
                f"  continue this folder's run:      {command_line(argv, add='--resume auto')}\n"
                "  continue that checkpoint's run:  the same command with --work-dir of an empty folder\n"
                f"  start this folder over from it:  "
                f"{command_line(argv, add=f'--resume {path} --overwrite')}   (moves this folder aside; "
                "'--overwrite delete' deletes it)"
            )
        raise RunFolderError(
            f"the run folder {run_dir} already holds a previous run ({_listing(found)}); nothing was changed.\n"
            f"  continue it:  {command_line(argv, add='--resume auto')}\n"
            f"  start over:   {command_line(argv, add='--overwrite')}   (moves the old folder aside; "
            "'--overwrite delete' deletes it)"
        )
    if overwrite == "delete":
        shutil.rmtree(run_dir)
        return f"deleted the previous run folder {run_dir} (--overwrite delete)"
    return f"moved the previous run folder {run_dir} to {move_aside(run_dir)} (--overwrite)"
