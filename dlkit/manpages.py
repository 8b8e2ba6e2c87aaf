"""Generate roff man pages for `dlkit` and each command from the CLI itself.

Regenerate with ``python -m dlkit.manpages man/``; a test fails when the pages in man/ are out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from dlkit import __version__


def _esc(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("-", "\\-")
    return "\n".join(("\\&" + line if line.startswith((".", "'")) else line) for line in text.splitlines())


def _paragraphs(text: str) -> str:
    from dlkit.cli import help_blocks

    out = []
    for example, lines in help_blocks((text or "").strip()):
        if example:
            out.append(".PP\n.nf\n.RS 4\n" + _esc("\n".join(line.strip() for line in lines)) + "\n.RE\n.fi")
        else:
            out.append(".PP\n" + _esc(" ".join(line.strip() for line in lines)))
    return "\n".join(out)


def _options(cmd, ctx) -> str:
    out = []
    for p in cmd.get_params(ctx):
        if p.param_type_name == "argument":
            out.append(f".TP\n.B {_esc((p.name or 'ARG').upper())}\n{_esc(getattr(p, 'help', None) or 'argument')}")
            continue
        rec = p.get_help_record(ctx)
        if rec is None:
            continue
        names, help_text = rec
        out.append(f".TP\n.B {_esc(names)}\n{_esc(help_text or '')}")
    return "\n".join(out)


def page(name: str, cmd, ctx) -> str:
    title = name.upper()
    short = (cmd.get_short_help_str(200) or "").strip()
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    parts = [
        f'.TH "{title}" "1" "" "dlkit {__version__}" "dlkit manual"',
        ".SH NAME",
        f"{_esc(name)} \\- {_esc(short)}",
        ".SH SYNOPSIS",
        f".B {_esc(name.replace('-', ' ', 1) if name != 'dlkit' else name)}\n{_esc(usage)}",
        ".SH DESCRIPTION",
        _paragraphs(cmd.help or ""),
        ".SH OPTIONS",
        _options(cmd, ctx),
    ]
    if hasattr(cmd, "list_commands"):
        parts.append(".SH COMMANDS")
        for sub_name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, sub_name)
            parts.append(f".TP\n.B {_esc(sub_name)}\n{_esc(sub.get_short_help_str(200))}")
    parts.append(".SH SEE ALSO\n" + ("dlkit(1)" if name != "dlkit" else "dlkit \\-\\-help, dlkit COMMAND \\-\\-help"))
    return "\n".join(parts) + "\n"


def generate() -> dict[str, str]:
    """File name -> page text for the root command and every command and subcommand."""
    from dlkit.cli import app

    root = typer.main.get_command(app)
    pages = {}

    # Typer may vendor its own click: use the command's own context class, never a separate click import.
    def walk(cmd, name: str, parent) -> None:
        ctx = cmd.context_class(cmd, info_name=cmd.name if parent else "dlkit", parent=parent)
        pages[f"{name}.1"] = page(name, cmd, ctx)
        if hasattr(cmd, "list_commands"):
            for sub_name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, sub_name), f"{name}-{sub_name}", ctx)

    walk(root, "dlkit", None)
    return pages


def main(out: str = "man") -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    pages = generate()
    for old in folder.glob("*.1"):
        if old.name not in pages:
            old.unlink()
    for fname, text in pages.items():
        (folder / fname).write_text(text, encoding="utf-8")
    print(f"wrote {len(pages)} man pages to {folder}/", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:2])
