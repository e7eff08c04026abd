"""``ralif app [PROJECTS_DIR] [--port N]``: start the labeling app in the browser, on this machine only.

It runs ``streamlit run <app script>`` on 127.0.0.1, headless, with XSRF protection, no usage
statistics and no tracebacks shown to users (the settings of ``make app`` and .streamlit/config.toml,
given as flags so they hold from any working folder). Projects live in PROJECTS_DIR (default:
$RALIF_PROJECTS, else ./ralif-projects).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import ralif
from ralif.app import packaged_script

NAME = "app"
HELP = "Start the labeling app (a local web page) on 127.0.0.1."
APP_FLAGS = ["--server.address", "127.0.0.1", "--server.headless", "true",
             "--server.enableXsrfProtection", "true", "--browser.gatherUsageStats", "false",
             "--client.showErrorDetails", "none", "--client.toolbarMode", "minimal",
             # Streamlit guesses "development mode" (which refuses --server.port) when it is installed
             # outside a site-packages folder (PEX, Nix, a vendored copy); this is always a user's run.
             "--global.developmentMode", "false"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("projects", nargs="?", type=Path, default=None,
                        help="folder of projects (default: $RALIF_PROJECTS, else ./ralif-projects)")
    parser.add_argument("--port", type=int, default=8501, help="local port (default 8501)")


def app_script() -> Path | None:
    """The app's entry script: shipped inside the package (``ralif/app/app.py``) or, from a source
    checkout whose pages are still at the top, the repository's ``app.py`` beside the package."""
    packaged = packaged_script()
    if packaged is not None:
        return packaged
    checkout = Path(ralif.__file__).resolve().parent.parent / "app.py"
    return checkout if checkout.is_file() and (checkout.parent / "views").is_dir() else None


def command(script: Path, port: int) -> list[str]:
    """The ``streamlit run`` command line for ``script`` on 127.0.0.1:``port``."""
    return [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port), *APP_FLAGS]


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        print(f"ralif app: --port must be between 1 and 65535, not {args.port}", file=sys.stderr)
        return 2
    script = app_script()
    if script is None:
        print("ralif app: the app's pages are not installed with this copy of ralif; run it from a source "
              "checkout (make app) or install a release that ships them.", file=sys.stderr)
        return 1
    env = dict(os.environ)
    if args.projects is not None:
        env["RALIF_PROJECTS"] = str(args.projects.expanduser().resolve())
    projects = env.get("RALIF_PROJECTS") or str(Path("ralif-projects").resolve())
    env["RALIF_PROJECTS"] = projects
    print(f"ralif app: projects in {projects}; open http://127.0.0.1:{args.port}", file=sys.stderr)
    # The app's folder is the working folder so its .streamlit/config.toml (theme) applies. The server
    # replaces this process rather than running as its child: a SIGTERM sent to `ralif app` (a service
    # manager, a terminal closing) then reaches the server itself instead of leaving it orphaned.
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(script.parent)
    os.execve(sys.executable, command(script, args.port), env)
    return 0    # not reached: execve returns only by raising
